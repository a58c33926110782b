"""`xlmr-np serve`: the rerank HTTP server on uvicorn and FastAPI (pip install 'xlmr-np[serve]').

One module per job, in the order a request meets them:
- runner.py: uvicorn, the connection (deadlines from a request's first byte, --max-connections, JSON for
  its own errors), file-descriptor limits, signals
- guard.py: what may reach a route (key, Host, Origin, connection overflow), per-request bookkeeping
- admission.py: the budgets a request draws on before each step (count, bytes, tokens), reading its body,
  tokenizing and waiting for its scores; the Service the routes share
- batcher.py: one engine thread batching the sequences of concurrent requests
- cohere.py, tei.py: one wire format each, request -> EncodeOptions -> typed response (xlmr_np.api)
- schema.py: the request models (validation and /openapi.json from one definition)
- errors.py: errors in each client's shape, answers sent in slices
- routes.py: the FastAPI app and its routes
- settings.py: the settings and their defaults, defined once
- metrics.py: Prometheus metrics
"""

EXTRA_HINT = "the server needs its extra: pip install 'xlmr-np[serve]'"
