# rolecast on CPU: llama.cpp backend, API + web chat on port 8000.
#   docker build -t rolecast .
#   docker run -p 8000:8000 -v "$PWD/packs:/packs:ro" -e ROLECAST_API_KEYS=change-me rolecast
# Binding 0.0.0.0 needs an API key: without ROLECAST_API_KEYS the server refuses to start.
FROM python:3.11-slim

# llama-cpp-python compiles llama.cpp; the compilers go away in the same layer.
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
 && pip install --no-cache-dir torch --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir '.[chat,serve]' \
 && apt-get purge -y build-essential cmake && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*

ENV ROLECAST_HOST=0.0.0.0 \
    ROLECAST_DB=/data/rolecast.db \
    HF_HUB_OFFLINE=1
VOLUME ["/packs", "/data"]
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["sh", "-c", "exec rolecast serve /packs/*"]
