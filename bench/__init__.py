"""Benchmarks of xlmr-np, run from a source checkout (they are not part of the installed package).

    python -m bench --help                              throughput against transformers+torch and onnxruntime
    python -m bench.profile_forward MODEL_DIR 16 256    where one forward pass spends its time, by op
    python -m pytest bench/                             micro-benchmarks of each op (pytest-benchmark)

Install the peers first: pip install -e '.[bench]'.
"""
