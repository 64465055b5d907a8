"""Request bodies of the OpenAI API, field for field (unknown fields are accepted and ignored)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ImagePart(_Body):
    type: Literal["image_url"]
    image_url: dict[str, Any]


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
Content = str | list[ContentPart]


class FunctionCall(_Body):
    name: str
    arguments: str


class ToolCall(_Body):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Body):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(_Body):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(_Body):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None


class ToolMessage(_Body):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDefinition(_Body):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchemaSpec(_Body):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class TextFormat(_Body):
    type: Literal["text"]


class JsonObjectFormat(_Body):
    type: Literal["json_object"]


class JsonSchemaFormat(_Body):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class StreamOptions(_Body):
    include_usage: bool = False


class _SamplingBody(_Body):
    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=16)
    user: str | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    # Token id (as a string, JSON keys being strings) -> bias added to its logit.
    logit_bias: dict[str, Any] | None = None

    @field_validator("presence_penalty", "frequency_penalty", mode="before")
    @classmethod
    def _null_is_no_penalty(cls, value: Any) -> Any:
        return 0.0 if value is None else value  # OpenAI's schema allows null for "not set"

    @field_validator("logit_bias")
    @classmethod
    def _token_biases(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Checked here rather than by the type, so that the error names `logit_bias` itself.
        for key, bias in (value or {}).items():
            if not key.strip().isdecimal():  # what int() reads: isdigit() passes "²", which int() refuses
                raise ValueError(f"keys must be token ids (non-negative integers as strings); got {key!r}")
            if isinstance(bias, bool) or not isinstance(bias, int | float) or not -100 <= bias <= 100:
                raise ValueError(f"the bias of token {key} must be a number from -100 to 100; got {bias!r}")
        return value

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def token_biases(self) -> tuple[tuple[int, float], ...]:
        return tuple((int(key), float(bias)) for key, bias in (self.logit_bias or {}).items())


class ChatCompletionRequest(_SamplingBody):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    # OpenAI's free-form tags; agent models read `thread_id` from here.
    metadata: dict[str, str] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @field_validator("logprobs", mode="before")
    @classmethod
    def _null_is_false(cls, value: Any) -> Any:
        return False if value is None else value

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


Prompt = str | list[int]


class CompletionRequest(_SamplingBody):
    # As OpenAI: a text, a list of texts, a token-id list, or a list of token-id lists.
    # minLength in the schema binds only the string; minItems says the same of the list.
    prompt: str | list[str] | list[int] | list[list[int]] = Field(min_length=1, json_schema_extra={"minItems": 1})
    max_tokens: int | None = Field(default=16, ge=0)  # 0 only with `echo`: the prompt scored, nothing generated
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)

    def prompts(self) -> list[Prompt]:
        """Each prompt: a text or a token-id list."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(item, int) for item in self.prompt):
            return [list(self.prompt)]  # type: ignore[arg-type]
        return list(self.prompt)  # type: ignore[arg-type]
