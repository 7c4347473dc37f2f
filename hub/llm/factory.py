"""Which model the hub talks to, from its settings and environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hub.llm.model import ChatModel

OPENAI_BASE_URL = "https://api.openai.com/v1"
#: The base URL that selects the in-process model of ``make demo``.
LOCAL = "local"


class ModelConfigError(Exception):
    """The model settings are incomplete or contradictory; the message says what to set."""


@dataclass(frozen=True)
class ModelConfig:
    base_url: str
    model: str | None
    api_key: str | None


def model_config(
    environ: Mapping[str, str],
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
) -> ModelConfig | None:
    """Flags first, then ``AIHUB_LLM_*``, then ``OPENAI_BASE_URL``/``OPENAI_API_KEY``.

    None when nothing names a model endpoint (the hub then serves tools but no chat).
    """
    key = api_key or environ.get("AIHUB_LLM_API_KEY") or environ.get("OPENAI_API_KEY") or None
    url = base_url or environ.get("AIHUB_LLM_BASE_URL") or environ.get("OPENAI_BASE_URL") or None
    name = model or environ.get("AIHUB_LLM_MODEL") or None
    if url is None and (key is not None or name is not None):
        url = OPENAI_BASE_URL
    if url is None:
        return None
    if url != LOCAL and not name:
        raise ModelConfigError(
            f"a model endpoint is set ({url}) but no model name: set AIHUB_LLM_MODEL or --llm-model"
        )
    if url != LOCAL and not url.startswith(("http://", "https://")):
        raise ModelConfigError(
            f"the model's base URL must start with http:// or https:// (or be 'local'): {url!r}"
        )
    return ModelConfig(url, name, key)


def make_model(config: ModelConfig, *, timeout: float, max_retries: int) -> ChatModel:
    if config.base_url == LOCAL:
        from hub.llm.local import LocalModel

        return LocalModel(model_path=config.model)
    from hub.llm.openai_model import OpenAIModel

    assert config.model is not None
    # Local servers (Ollama, llama.cpp) take any key, but the SDK insists on one.
    return OpenAIModel(config.base_url, config.model, config.api_key or "no-key", timeout, max_retries)
