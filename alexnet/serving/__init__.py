"""``alexnet serve``: one model in memory behind a small HTTP API and a page (FastAPI + uvicorn).

Optional dependency: ``alexnet[serve]`` (fastapi, uvicorn, python-multipart). See
:mod:`alexnet.serving.app` for the endpoints and limits.
"""
