"""`xlmr-np serve`: the rerank HTTP server on uvicorn and FastAPI (pip install 'xlmr-np[serve]').

- schema.py: the request and response models (validation and /openapi.json from one definition)
- app.py: the routes (Cohere v1/v2, Jina, text-embeddings-inference), the key and origin guard, errors
- batcher.py: one engine thread batching the sequences of concurrent requests
- metrics.py: Prometheus metrics
- runner.py: uvicorn with a deadline on every connection, graceful shutdown
"""

EXTRA_HINT = "the server needs its extra: pip install 'xlmr-np[serve]'"
