"""schemathesis against /openapi.json: every operation, every check, 0 failures.

Bounded to fit a 2-core CI: a few examples per operation, a time budget, and no stateful
phase (it would chain uploads into real fine-tuning jobs). Every built-in check is on unless
the config below says otherwise, and it says why.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# - A schema can say "a string", not "a file this server stores" or "a model it serves": for the
#   operations that refuse well-formed input naming something absent, or a malformed fine-tune
#   JSONL inside an upload, a 400 is the right answer to schema-valid data.
# - Any bytes are a file: schemathesis' "wrong type" for an upload (a boolean) arrives as the four
#   bytes `true`, which the server rightly stores.
# - schemathesis 4.32's coverage phase fails inside itself ("Inconsistent results") building chat
#   request bodies; the fuzzing phase still sends them.
CONFIG = """
[phases.stateful]
enabled = false

[[operations]]
include-method = "POST"
include-path-regex = "^/v1/(fine_tuning/jobs|tools/knowledge_ingest)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404"]

[[operations]]
include-method = "POST"
include-path = "/v1/files"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404"]
checks.negative_data_rejection.enabled = false

[[operations]]
include-method = "POST"
include-path = "/v1/chat/completions"
phases.coverage.enabled = false
"""


def test_the_document_describes_the_server(server, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    run = subprocess.run(
        [str(Path(sys.executable).with_name("st")), "--config-file", str(config), "run", f"{server.url}/openapi.json",
         "--max-examples", "10", "--max-time", "60", "--workers", "2", "--seed", "18", "--request-timeout", "60",
         "--no-color"],
        capture_output=True, text=True, timeout=400, cwd=tmp_path)  # its .schemathesis/ cache stays out of the repo
    report = run.stdout.replace("\n\n", "\n")
    assert run.returncode == 0, report[max(0, report.find("FAILURES")):][:8000] + run.stderr[-2000:]
    assert "Stateful (disabled)" in run.stdout
