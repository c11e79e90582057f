"""Serving: ``ChatService`` (``service``) over a SQLite store (``store``), and its thin
adapters: the OpenAI-compatible API (``server``, ``api_models``), the web chat
(``webchat``), Telegram (``telegram``), Prometheus metrics (``metrics``) and
``rolecast compose`` (``compose``).
"""
