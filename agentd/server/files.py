"""OpenAI's Files API over the file store: upload, list, retrieve, content, delete."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response

from agentd.server.errors import APIError
from tools.files import FileNotFound, FileStore

FilePurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]


def file_router(store: FileStore, *, max_upload_bytes: int = 512 * 2**20,
                validators: Mapping[str, Callable[[bytes, str], object]] | None = None) -> APIRouter:
    """Routes at `/files`; `validators` check an upload of a given purpose (`fine-tune` JSONL, say).

    A validator raises ValueError with a message naming what is wrong; the upload is then
    refused with a 400.
    """
    router = APIRouter(tags=["files"])
    validators = dict(validators or {})

    @router.post("/files", responses={413: {"description": "The file is over the upload limit"}})
    async def upload_file(file: UploadFile = File(...), purpose: FilePurpose = Form(...)):
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise APIError(413, f"the file is larger than the {max_upload_bytes // 2**20} MiB upload limit",
                           param="file", code="file_too_large")
        name = file.filename or "upload"
        if purpose in validators:
            try:
                await asyncio.to_thread(validators[purpose], data, name)
            except ValueError as error:
                raise APIError(400, f"invalid {purpose} file: {error}", param="file",
                               code="invalid_file_format") from None
        return store.put(data, name, purpose=purpose, mime_type=file.content_type).to_openai()

    @router.get("/files")
    async def list_files(purpose: str | None = None, limit: int = Query(10000, ge=1, le=10000),
                         order: Literal["asc", "desc"] = "desc", after: str | None = None):
        found = _found(lambda: store.list(purpose, limit + 1, after=after, order=order), param="after")
        page = [stored.to_openai() for stored in found[:limit]]
        return {"object": "list", "data": page, "has_more": len(found) > limit,
                "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}

    @router.get("/files/{file_id}")
    async def retrieve_file(file_id: str):
        return _found(lambda: store.get(file_id)).to_openai()

    @router.delete("/files/{file_id}")
    async def delete_file(file_id: str):
        _found(lambda: store.delete(file_id))
        return {"id": file_id, "object": "file", "deleted": True}

    @router.get("/files/{file_id}/content", response_class=Response,
                responses={200: {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}})
    async def file_content(file_id: str):
        stored = _found(lambda: store.get(file_id))
        return Response(store.read(file_id), media_type=stored.mime_type,
                        headers={"Content-Disposition": f'attachment; filename="{stored.filename}"'})

    return router


def _found(look_up: Callable[[], Any], *, param: str = "file_id") -> Any:
    try:
        return look_up()
    except FileNotFound as error:
        raise APIError(404, str(error), param=param, code="file_not_found") from None
