"""HTTP service over an image index: search, zero-shot classify, moderate, embed, and a web page.

``create_app(SearchService.from_paths(ckpt, db))`` builds the FastAPI app; ``run_server(app)``
serves it (``clipforge serve CKPT --db DB``).
"""

from .app import create_app
from .runner import run_server
from .service import SearchService

__all__ = ["SearchService", "create_app", "run_server"]
