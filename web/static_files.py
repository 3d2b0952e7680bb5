"""The /static router: files from the checkout's static/ folder. A path that names no file (a
folder, a NUL byte, a name too long for the file system, a way out of the folder) is a plain
404 in the public API's error shape that says nothing about where the files live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Request, Response, Router
from litestar.exceptions import NotFoundException
from litestar.file_system import BaseLocalFileSystem
from litestar.static_files import create_static_files_router
from litestar.types import PathType

from web.api.errors import error_response


class _StaticFileSystem(BaseLocalFileSystem):
    async def info(self, path: PathType, **kwargs: Any) -> Any:
        # os.stat raises ValueError for a NUL byte and OSError for a name it cannot look up
        # (too long, not readable...): for a request, all of them are "no such file" (Litestar
        # would answer 500, or 401 naming the path).
        try:
            return await super().info(path, **kwargs)
        except (ValueError, OSError) as exc:
            raise FileNotFoundError(str(path)) from exc


def _not_found(_: Request[Any, Any, Any], __: Exception) -> Response[Any]:
    # Litestar's message names the absolute path it looked at.
    return error_response(404, "Not Found")


def static_files_router(directory: Path) -> Router:
    return create_static_files_router(
        path="/static",
        directories=[directory],
        file_system=_StaticFileSystem(),
        exception_handlers={NotFoundException: _not_found},
    )
