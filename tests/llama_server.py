"""``python -m llama_cpp.server`` with the model parameters rolecast's llamacpp backend uses (``guard_amx``:
no extra buffer types on AMX processors, where decoding the bundled Q4_1 model from them segfaults).

    python tests/llama_server.py --model M.gguf --host 127.0.0.1 --port 8080
"""

import runpy

from rolecast.backends.llamacpp import guard_amx

guard_amx()
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
