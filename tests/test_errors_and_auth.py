"""Bad input gets a 4xx in OpenAI's error shape; API keys guard /v1 but not /health."""

import httpx
import openai
import pytest

from tests.conftest import DATA_DIR, MODEL, start_server

QUESTION = [{"role": "user", "content": "Hi"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_invalid_json_is_400(http):
    response = http.post("/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    assert response.status_code == 400 and "JSON" in error_of(response)["message"]


@pytest.mark.parametrize(
    "patch, param",
    [
        ({"messages": []}, "messages"),
        ({"messages": None}, "messages"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"n": 0}, "n"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0]"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
    ],
)
def test_invalid_fields_are_400_naming_the_field(http, patch, param):
    body = {"model": MODEL, "messages": QUESTION} | patch
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"].startswith(param) and error["type"] == "invalid_request_error"


def test_tool_choice_errors(client):
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(
            model=MODEL, messages=QUESTION, tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "launch_rocket"}},
        )
    assert unknown.value.body["param"] == "tool_choice" and "launch_rocket" in unknown.value.body["message"]
    with pytest.raises(openai.BadRequestError) as without_tools:
        client.chat.completions.create(model=MODEL, messages=QUESTION, tool_choice="required")
    assert without_tools.value.body["param"] == "tool_choice"


def test_prompt_over_the_context_is_400_saying_the_limit(client, engine):
    long = "word " * (engine.info.context_length + 10)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": long}], stream=stream)
        assert str(engine.info.context_length) in error.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=engine.info.context_length + 1)


def test_image_parts_are_refused_clearly(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    assert error.value.body["param"] == "messages[0].content"


def test_unknown_model_is_404(client, http):
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(model="gpt-99", messages=QUESTION)
    assert error.value.body["code"] == "model_not_found" and error.value.body["param"] == "model"
    assert http.get("/v1/nowhere").status_code == 404
    error_of(http.get("/v1/nowhere"))


def test_api_keys(registry):
    guarded = start_server(registry, api_keys=["sesame", "second"])
    try:
        missing = httpx.post(f"{guarded.url}/v1/chat/completions", json={"model": MODEL, "messages": QUESTION})
        assert missing.status_code == 401 and error_of(missing)["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            guarded.client(api_key="wrong").chat.completions.create(model=MODEL, messages=QUESTION)
        assert MODEL in [m.id for m in guarded.client(api_key="second").models.list()]
        reply = guarded.client(api_key="sesame").chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=2, temperature=0)
        assert reply.choices[0].message.content
        assert httpx.get(f"{guarded.url}/health").status_code == 200
        assert error_of(httpx.get(f"{guarded.url}/v1/models"))["code"] == "invalid_api_key"
        settings = guarded.app.state.settings
        assert "sesame" not in repr(settings) and "sesame" not in settings.model_dump_json()
    finally:
        guarded.stop()


def test_cors(registry):
    server = start_server(registry, cors_origins=["http://dashboard.local"])
    try:
        preflight = httpx.options(f"{server.url}/v1/chat/completions", headers={
            "Origin": "http://dashboard.local", "Access-Control-Request-Method": "POST"})
        assert preflight.headers["access-control-allow-origin"] == "http://dashboard.local"
        other = httpx.options(f"{server.url}/v1/chat/completions", headers={
            "Origin": "http://evil.local", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers
    finally:
        server.stop()


def test_405_names_every_method_the_path_answers(http):
    for method in ("TRACE", "PUT"):
        response = http.request(method, "/v1/files")
        assert response.status_code == 405 and response.headers["allow"] == "GET, POST"
        error_of(response)
    assert http.request("TRACE", "/v1/chat/completions").headers["allow"] == "POST"
    # `/v1/tools/calculator` is both the calculator's route and `/v1/tools/{name}`.
    assert http.request("TRACE", "/v1/tools/calculator").headers["allow"] == "GET, POST"


def test_the_openapi_document_declares_the_errors_sent(http):
    document = http.get("/openapi.json").json()
    operations = [(path, method, operation) for path, item in document["paths"].items()
                  for method, operation in item.items()]
    assert not [(path, method) for path, method, operation in operations if "422" in operation["responses"]]
    chat = document["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"400", "404", "503"} <= set(chat)
    assert chat["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert set(document["components"]["schemas"]["Error"]["properties"]["error"]["required"]) == {
        "message", "type", "param", "code"}
    assert "413" in document["paths"]["/v1/files"]["post"]["responses"]
    assert "401" not in document["paths"]["/health"]["get"]["responses"]
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert http.get("/metrics").headers["content-type"].startswith("text/plain")


def test_keyed_routes_declare_401(registry):
    guarded = start_server(registry, api_keys=["sesame"])
    try:
        paths = httpx.get(f"{guarded.url}/openapi.json", headers={"Authorization": "Bearer sesame"}).json()["paths"]
        assert "401" in paths["/v1/models"]["get"]["responses"] and "401" in paths["/v1/files"]["post"]["responses"]
        assert "401" not in paths["/health"]["get"]["responses"]
    finally:
        guarded.stop()


def test_constraints_the_handlers_enforce_are_in_the_document(http):
    document = http.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    prompt = schemas["CompletionRequest"]["properties"]["prompt"]
    assert prompt["minLength"] == 1 and prompt["minItems"] == 1
    assert http.post("/v1/completions", json={"model": MODEL, "prompt": []}).status_code == 400
    ingest = document["paths"]["/v1/tools/knowledge_ingest"]["post"]["requestBody"]["content"]["application/json"]
    assert ingest["schema"]["properties"]["document"]["pattern"] == "^(file-|data:)"
    job = schemas["FineTuneJobRequest"]["properties"]
    assert job["model"]["minLength"] == 1 and job["training_file"]["minLength"] == 1
    refused = http.post("/v1/fine_tuning/jobs", json={"model": "", "training_file": "file-x"})
    assert refused.status_code == 400 and error_of(refused)["param"] == "model"
    upload = next(schema for name, schema in schemas.items() if name.startswith("Body_upload_file"))
    assert "fine-tune" in upload["properties"]["purpose"]["enum"]
    for purpose in ("", "nonsense"):
        bad = http.post("/v1/files", files={"file": ("a.txt", b"hi")}, data={"purpose": purpose})
        assert bad.status_code == 400 and error_of(bad)["param"] == "purpose"


def test_a_locked_data_store_is_503_not_500(registry, tmp_path):
    import sqlite3

    running = start_server(registry)
    blobs = DATA_DIR / "files" / "blobs"
    before = set(blobs.iterdir())
    try:
        files_db = sqlite3.connect(DATA_DIR / "files" / "files.sqlite", isolation_level=None)
        files_db.execute("BEGIN EXCLUSIVE")  # another process holding the write lock past the busy timeout
        try:
            with httpx.Client(base_url=running.url, timeout=60) as http:
                answer = http.post("/v1/files", files={"file": ("notes.txt", b"hello")}, data={"purpose": "assistants"})
        finally:
            files_db.rollback()
            files_db.close()
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["type"] == "service_unavailable"
        assert "locked" in answer.json()["error"]["message"]
        assert set(blobs.iterdir()) == before, "the refused upload left bytes behind that no file id names"
    finally:
        running.stop()
