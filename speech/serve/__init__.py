"""The Speech-02 HTTP server: MiniMax- and OpenAI-compatible routes over ``speech.inference``.

See docs/serving.md.

``create_app(build_server(config))`` builds the FastAPI app;
``serve.py`` at the repository root runs it with uvicorn.
"""
