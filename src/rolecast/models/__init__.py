"""The weights rolecast loads: named bases (``bases``), a base as a file or a
transformers model (``base_model``), its chat template (``templates``) and the
sentence embedder (``embeddings``). Nothing here knows of characters or packs.
"""
