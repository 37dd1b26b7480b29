"""The `persona` command through a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SEED

PERSONA = [sys.executable, "-m", "persona"]


def persona(*args: str, data_dir: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PERSONA_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*PERSONA, *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("cli") / "index"
    result = persona("ingest", str(SEED), data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert "sales-manager: 103 chunks + 1934 sidecar questions, 2037 added" in result.stderr
    assert "89 passages tuned to their examples" in result.stderr
    return data_dir


def test_ingest_again_is_unchanged(cli_index: Path) -> None:
    result = persona("ingest", str(SEED), data_dir=cli_index)
    assert result.returncode == 0 and "unchanged" in result.stderr


def test_ask_json_cites_the_card(cli_index: Path) -> None:
    result = persona("ask", "How do I know if a rep needs coaching or should be let go?", "--json",
                     data_dir=cli_index)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["grounded"] and body["citations"]
    assert all(c["id"].startswith("sales-manager/") for c in body["citations"])


def test_ask_text_prints_sources_and_retrieve_lists_hits(cli_index: Path) -> None:
    answer = persona("ask", "What is a PIP?", data_dir=cli_index)
    assert answer.returncode == 0 and "Sources" in answer.stdout and "[1]" in answer.stdout
    hits = persona("retrieve", "What is a PIP?", "-k", "2", data_dir=cli_index)
    assert hits.returncode == 0 and "Vocabulary › PIP" in hits.stdout


def test_ask_with_a_history_file_answers_the_follow_up(cli_index: Path, tmp_path: Path) -> None:
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"role": "user", "content": "how do i run a pipeline review"},
                                {"role": "assistant", "content": "Focus on the stuck deals. [1]"}]))
    result = persona("ask", "how often?", "--history", str(chat), "--json", data_dir=cli_index)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["grounded"] and body["searched_for"] == "how do i run a pipeline review how often?"
    assert body["citations"][0]["id"] == "sales-manager/workflow/run-the-cadence"
    request = tmp_path / "request.yaml"  # a saved chat request (YAML): its system message is not a turn
    request.write_text("messages:\n- role: system\n  content: be brief\n- role: user\n  content: What is OTE?\n")
    text = persona("ask", "and for new reps?", "--history", str(request), data_dir=cli_index)
    assert text.returncode == 0 and "Sources" in text.stdout
    assert "searched for: What is OTE? and for new reps?" in text.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"role": "robot", "content": "beep"}]))
    for path, message in ((bad, "bad.json: history[0].role must be 'user' or 'assistant', got 'robot'"),
                          (tmp_path / "missing.json", "cannot read the history file"),):
        failed = persona("ask", "how often?", "--history", str(path), data_dir=cli_index)
        assert failed.returncode == 2 and message in failed.stderr and "Traceback" not in failed.stderr


def test_chat_keeps_the_conversation_until_new(cli_index: Path) -> None:
    lines = ["how do i run a pipeline review", "how often?", "", "/new", "how often?", "/quit", "never asked"]
    env = {**os.environ, "PERSONA_DATA_DIR": str(cli_index), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*PERSONA, "chat"], input="\n".join(lines) + "\n", capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    replies = [line for line in done.stdout.split("you> ") if line.startswith("sales-manager> ")]
    assert len(replies) == 3, done.stdout
    assert "Workflow › Run the cadence" in replies[1]  # the follow-up, read after the first question
    assert "(searched for: how do i run a pipeline review how often?)" in done.stderr
    assert "(a new conversation)" in done.stderr
    assert "Sources:" in replies[1] and "Sources:" not in replies[2]  # after /new, "how often?" alone is not covered


def test_errors_are_one_line_without_traceback(cli_index: Path, tmp_path: Path) -> None:
    unknown = persona("ask", "hello", "--persona", "astronaut", data_dir=cli_index)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().startswith("error: unknown persona 'astronaut'")
    assert "Traceback" not in unknown.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: Broken\nslug: broken\n", encoding="utf-8")
    rejected = persona("ingest", str(bad), data_dir=cli_index)
    assert rejected.returncode == 2 and "Traceback" not in rejected.stderr
    assert f"{bad}: field 'sections'" in rejected.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CHEF = """title: Pastry Chef
slug: pastry-chef
summary: Makes desserts and breads in a professional kitchen.
sections:
  - heading: Rules of Thumb
    markdown: |
      - **Weigh everything.** Never measure flour by volume.
"""


def test_serve_ingests_seeds_then_answers_over_http(tmp_path: Path) -> None:
    """`make serve`, then `persona ingest` of a new card from a second terminal: it goes through the server holding
    the index, and the new persona answers without a restart."""
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    shutil.copy(SEED, seeds / SEED.name)
    port = free_port()
    env = {**os.environ, "PERSONA_DATA_DIR": str(tmp_path / "index"), "PERSONA_SEEDS_DIR": str(seeds),
           "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([*PERSONA, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        body = httpx.post(f"http://127.0.0.1:{port}/v1/ask", timeout=30,
                          json={"question": "How much pipeline do I need to hit my quota?"}).json()
        assert body["grounded"] and body["citations"][0]["id"].startswith("sales-manager/")
        (tmp_path / "pastry-chef.yaml").write_text(CHEF, encoding="utf-8")
        second = subprocess.run([*PERSONA, "ingest", str(tmp_path / "pastry-chef.yaml")], env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert "pastry-chef: 3 chunks, 3 added, 0 changed, 0 removed, 3 embedded" in second.stderr
        assert "0 example questions, 0 boundary questions; thresholds: rule" in second.stderr
        assert "warning: pastry-chef has no example questions and no boundary questions of its own" in second.stderr
        assert f"`persona enrich {tmp_path / 'pastry-chef.yaml'}`" in second.stderr
        chef = httpx.post(f"http://127.0.0.1:{port}/v1/ask", timeout=30,
                          json={"question": "how do I measure flour?", "persona": "pastry-chef"}).json()
        assert chef["grounded"] and chef["citations"][0]["id"].startswith("pastry-chef/")
        listed = subprocess.run([*PERSONA, "personas"], env=env, capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert "(3 chunks; 0 example questions, 0 boundary questions; thresholds: rule)" in listed.stdout
        assert "warning: pastry-chef has no example questions" in listed.stderr
        assert "warning: sales-manager has no example questions" in listed.stderr  # its sidecar was not copied
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_eval_without_the_eval_extra_names_it() -> None:
    hidden = ("import sys; sys.modules['matplotlib'] = None; sys.argv = ['persona', 'eval']; "
              "from persona.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", hidden], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "pip install 'persona-rag[eval]'" in result.stderr
