"""nox sessions: `nox -s NAME` (pip install nox)."""

import nox

# LangChain and LlamaIndex rerankers: heavy (about 100 packages) and pinned to their own cohere release,
# so they stay out of the test extra and run in this session's own environment before a release.
FRAMEWORKS = ["langchain-cohere", "langchain-community", "llama-index-postprocessor-cohere-rerank"]
REPORTED = [*FRAMEWORKS, "langchain-core", "llama-index-core", "cohere"]


@nox.session
def clients_frameworks(session: nox.Session) -> None:
    """LangChain's CohereRerank and JinaRerank and LlamaIndex's CohereRerank against `xlmr-np serve`."""
    session.install("-e", ".[test]", *FRAMEWORKS)
    session.run(
        "python",
        "-c",
        "import sys, importlib.metadata as m; "  # the versions tested, in the log
        "[print(name, m.version(name)) for name in sys.argv[1:]]",
        *REPORTED,
    )
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "tests/test_clients_frameworks.py",
        *session.posargs,
        env={"XLMR_NP_REQUIRE_FRAMEWORKS": "1", "XLMR_NP_REQUIRE_TORCH": "1"},
    )
