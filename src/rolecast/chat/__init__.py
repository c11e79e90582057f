"""The chat core: a pack and a backend in, the character's reply out.

``performer`` runs a turn (retrieve, prompt, sample, clean, rerank) with ``prompt``,
``postprocess``, ``retrieval`` and ``style``; ``served`` says which model and adapter
serve a pack; ``terminal`` is ``rolecast chat``.
"""
