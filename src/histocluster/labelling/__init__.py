"""Naming clusters: the vision-language-model client and its answer cache, votes, a
person's labels file, propagation of names to every cell, and the API key.

Owned by the ``classification`` pipeline."""
