"""langgraph.json serves the rewrite graph: start `langgraph dev` on loopback and call it with langgraph-sdk."""

import os
import shutil
import sys
from pathlib import Path

import pytest
from servers import free_port, serve

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_langgraph_dev_serves_the_rewrite_graph(tmp_path, smollm_path):
    cli = shutil.which("langgraph", path=str(Path(sys.executable).parent))
    assert cli, "langgraph-cli[inmem] is part of the dev extra"
    from langgraph_sdk import get_sync_client

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTLOOP_")}
    env.update(PROMPTLOOP_HOME=str(tmp_path / "home"), PROMPTLOOP_BASE_MODEL=str(smollm_path), HF_HUB_OFFLINE="1",
               PROMPTLOOP_GENERATION__MAX_NEW_TOKENS="40", LANGGRAPH_CLI_NO_ANALYTICS="1")
    cmd = [cli, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with serve(cmd, f"{url}/ok", tmp_path / "server.log", env=env, cwd=REPO):
        client = get_sync_client(url=url)
        assert [a["graph_id"] for a in client.assistants.search()] == ["rewrite"]
        thread = client.threads.create()
        values = client.runs.wait(thread["thread_id"], "rewrite",
                                  input={"items": [{"prompt": "a cat playing piano"}]},
                                  context={"n": 2, "max_refine_steps": 0})
        item = values["items"][0]
        assert item["final_prompt"] and not item.get("refused")
        assert len(item["candidates"]) >= 1 and item["current_critique"]["accurate"] >= 0
        state = client.threads.get_state(thread["thread_id"])
        assert state["values"]["items"][0]["final_prompt"] == item["final_prompt"]
