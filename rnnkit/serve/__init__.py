"""Serving trained models: the HTTP API, micro-batching, and the web page (``rnnkit serve``)."""
