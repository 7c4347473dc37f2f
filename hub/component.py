"""The workspace hub as one component: settings, registry, auth, routes and the chat service.

``aihub serve`` mounts it in its own small app (hub/app.py); a host
application can include ``WorkspaceHub(settings).router`` the same way.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from hub import api, chat, workspace
from hub.auth import bearer_matches
from hub.conversations import Conversations
from hub.llm.factory import make_model, model_config
from hub.llm.model import ChatModel
from hub.registry import Registry
from hub.settings import HubSettings


class WorkspaceHub:
    def __init__(self, settings: HubSettings, model: ChatModel | None = None) -> None:
        self.settings = settings
        self.registry = Registry()
        if model is None:
            config = model_config({}, settings.llm_base_url, settings.llm_model, settings.llm_api_key)
            if config is not None:
                model = make_model(config, timeout=settings.llm_timeout, max_retries=settings.llm_max_retries)
        self.model = model
        self.conversations = Conversations(settings.conversations_path)
        self.chat = chat.ChatService(self.registry, settings, model, self.conversations)
        self.router = APIRouter()
        self.router.include_router(workspace.build_router(self.registry, settings, self.authorized))
        self.router.include_router(api.build_router(self.registry, settings, self.require_token))
        self.router.include_router(chat.build_router(self.registry, self.chat, self.require_token))

    def authorized(self, header: str | None) -> bool:
        return bearer_matches(header, self.settings.token)

    async def require_token(self, request: Request) -> None:
        """FastAPI dependency: 401 unless the request carries the hub's bearer token."""
        if not self.authorized(request.headers.get("authorization")):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
