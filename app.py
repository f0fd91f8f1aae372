"""XDD Explorer: the Streamlit entry point.  Start it with ``make app``.

The router (st.navigation over pages/run.py, results.py, embeddings.py, probe.py, method.py)
and the sidebar (device, worker, queue) live in pages/_common.py:run_app, so that a page
reached without this file can route itself (see require_router there).  No computation
happens here.
"""
from pages._common import run_app

run_app()
