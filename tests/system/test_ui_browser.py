"""`zmesh ui` in a real headless Chromium (selenium) against 3 real agent processes.

The pages must follow the mesh live: no test reloads a page, and each checks that
the page it watched was never reloaded (a marker set in the page survives).
Screenshots go to ``$ZMESH_ARTEFACTS/ui`` (default ``artefacts/ui``, gitignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.procs import ProcAgent, ProcMesh
from zambeze_mesh.campaign.activities import ShellActivity
from zambeze_mesh.campaign.client import Client

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
        reason="needs Debian's chromium and chromium-driver (scripts/test installs them)",
    ),
]
selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

FAIL = "echo 'boom: bad input' >&2; exit 3"
FINAL_ROW = "#events tr[data-state='FAILED'][data-activity='']"
ARTEFACTS = Path(os.environ.get("ZMESH_ARTEFACTS", Path(__file__).parents[2] / "artefacts")) / "ui"


@dataclass
class Ui:
    mesh: ProcMesh
    proc: subprocess.Popen[str]
    url: str
    client: Client

    @property
    def base(self) -> str:
        return self.url.split("/?", 1)[0]

    @property
    def token(self) -> str:
        return self.url.split("token=", 1)[1]

    def page(self, route: str) -> str:
        return f"{self.url}#{route}"

    def agent(self, name: str) -> ProcAgent:
        return self.mesh.agents[name]


def _start_ui(home: Path) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "zambeze_mesh.cli.main", "--home", str(home), "ui"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "?token=" in line:
            return proc, line.strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("zmesh ui printed no URL")


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    pm = ProcMesh(tmp_path_factory.mktemp("uimesh"))
    proc = None
    try:
        a = pm.init("a")
        a.start()
        for name in ("b", "c"):
            pm.join(name, a).start()
        pm.wait_for(lambda: sorted(a.statuses().values()) == ["alive"] * 3, 30, "3 alive")
        proc, url = _start_ui(a.home)
        yield Ui(pm, proc, url, Client(f"unix:{a.home / 'agent.sock'}"))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        pm.stop_all()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    os.environ.setdefault("SE_AVOID_STATS", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER)
    )
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait(driver: Any, cond: Callable[[Any], Any], timeout: float = 30, what: str = "") -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(cond)
    except Exception as exc:
        shot(driver, "timeout-" + (what or "wait").replace(" ", "-"))
        raise AssertionError(f"timed out waiting for {what}") from exc


def page_errors(driver: Any) -> list[str]:
    """Errors the page logged since the last call (script errors, CSP violations...)."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
    ]


def mark(driver: Any) -> None:
    """Set a marker that only a reload of the page would remove."""
    driver.execute_script("window.__notReloaded = true")


def not_reloaded(driver: Any) -> bool:
    return bool(driver.execute_script("return window.__notReloaded === true"))


def attr(driver: Any, css: str, name: str) -> str | None:
    # One script call: the page may re-render the element between two WebDriver calls.
    got: str | None = driver.execute_script(
        "const e = document.querySelector(arguments[0]);"
        " return e ? e.getAttribute(arguments[1]) : null;",
        css,
        name,
    )
    return got


def node_states(driver: Any) -> dict[str, str]:
    got: dict[str, str] = driver.execute_script(
        "const o = {}; for (const g of document.querySelectorAll('svg .node'))"
        " o[g.dataset.name] = g.dataset.state; return o;"
    )
    return got


def submit(ui: Ui, name: str, acts: list[ShellActivity]) -> str:
    return asyncio.run(ui.client.submit(name, acts)).campaign_id


def campaign_state(ui: Ui, cid: str) -> str:
    return asyncio.run(ui.client.get(cid)).state


def processes_with(marker: str) -> dict[int, int]:
    """pid -> parent pid of the processes whose command line holds ``marker``."""
    found: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                stat = (d / "stat").read_text()
                found[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def ancestors(pid: int) -> set[int]:
    out: set[int] = set()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        out.add(pid)
    return out


# ---------------------------------------------------------------------------- tests
def test_token_required_and_cross_origin_post_cannot_cancel(ui: Ui, browser: Any) -> None:
    for path in ("/", "/api/members", "/static/app.js", "/api/stream/members"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(ui.base + path, timeout=10)
        assert err.value.code == 403, path
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{ui.base}/?token=not-the-token", timeout=10)
    assert err.value.code == 403

    cid = submit(ui, "cross origin target", [ShellActivity("wait", cmd="sleep 120", agent="b")])
    ui.mesh.wait_for(
        lambda: asyncio.run(ui.client.get(cid)).states["wait"] == "RUNNING", 30, "running"
    )
    # The browser holds the UI's cookie (it opened the page with the token) ...
    browser.get(ui.page("/campaigns"))
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"tr[data-campaign='{cid}']"))
    # ... then a page of another origin tries a form POST and a fetch POST with the header.
    cancel = f"{ui.base}/api/campaigns/{cid}/cancel"
    evil = f"""<!doctype html><html><body>
<form id="f" method="POST" action="{cancel}" target="sink"></form>
<iframe name="sink"></iframe>
<script>
document.getElementById("f").submit();
fetch("{cancel}", {{method: "POST", credentials: "include",
                   headers: {{"X-Zmesh-Token": "guess"}}}})
  .then(r => document.title = "fetch " + r.status)
  .catch(e => document.title = "fetch blocked");
fetch("{cancel}", {{method: "POST", mode: "no-cors", credentials: "include"}})
  .finally(() => document.body.dataset.done = "1");
</script></body></html>""".encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(evil)))
            self.end_headers()
            self.wfile.write(evil)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/")
        wait(browser, lambda d: d.execute_script("return document.body.dataset.done"), 20, "evil")
        wait(browser, lambda d: d.title.startswith("fetch"), 20, "evil fetch")
        shot(browser, "cross-origin-attempt")
        time.sleep(1.0)
    finally:
        server.shutdown()
    assert browser.title == "fetch blocked"  # the preflight is refused
    assert campaign_state(ui, cid) == "RUNNING"
    assert asyncio.run(ui.client.get(cid)).states["wait"] == "RUNNING"
    asyncio.run(ui.client.cancel(cid))


def test_campaign_page_follows_a_diamond_with_a_failing_branch(ui: Ui, browser: Any) -> None:
    browser.get(ui.page("/campaigns"))
    page_errors(browser)  # forget the previous test's page
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#campaigns tbody"))
    mark(browser)
    acts = [
        ShellActivity("top", cmd="sleep 1; echo top"),
        ShellActivity("left", cmd="sleep 2; echo left", depends_on=["top"], agent="b"),
        ShellActivity("right", cmd=f"sleep 1; {FAIL}", depends_on=["top"], agent="c"),
        ShellActivity("bottom", cmd="echo never", depends_on=["left", "right"]),
    ]
    cid = submit(ui, "diamond", acts)
    row = f"tr[data-campaign='{cid}']"
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row), 10, "campaign row")
    shot(browser, "campaigns")
    browser.find_element(By.CSS_SELECTOR, f"{row} a").click()  # hash route: no reload
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "svg .node"), 10, "dag")
    seen_running = wait(
        browser,
        lambda d: "RUNNING" in node_states(d).values() or "SUCCEEDED" in node_states(d).values(),
        20,
        "a running node",
    )
    assert seen_running
    shot(browser, "campaign-running")
    final = {"top": "SUCCEEDED", "left": "SUCCEEDED", "right": "FAILED", "bottom": "SKIPPED"}
    wait(browser, lambda d: node_states(d) == final, 60, "final DAG colours")
    wait(
        browser, lambda d: attr(d, "#campaign-state", "data-state") == "FAILED", 20, "campaign end"
    )
    fills = browser.execute_script(
        "const o = {}; for (const g of document.querySelectorAll('svg .node'))"
        " o[g.dataset.name] = g.querySelector('rect').getAttribute('fill'); return o;"
    )
    assert fills == {
        "top": "#4caf50",
        "left": "#4caf50",
        "right": "#f44336",
        "bottom": "#ff9800",
    }
    # The event table reached the campaign's final event.
    wait(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, FINAL_ROW),
        20,
        "final event row",
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr")
    seqs = [int(r.get_attribute("data-seq")) for r in rows]
    assert seqs == sorted(seqs, reverse=True) and seqs[-1] == 1
    assert seqs[0] == asyncio.run(ui.client.get(cid)).last_seq
    assert "b" in browser.find_element(By.CSS_SELECTOR, "svg .node[data-name='left']").text
    # The failed activity's detail: its stderr tail and exit code.
    browser.find_element(By.CSS_SELECTOR, "svg .node[data-name='right'] rect").click()
    wait(browser, lambda d: d.find_elements(By.ID, "stderr-tail"), 10, "stderr tail")
    assert "boom: bad input" in browser.find_element(By.ID, "stderr-tail").text
    assert browser.find_element(By.ID, "exit-code").text == "3"
    assert not_reloaded(browser)
    shot(browser, "campaign-failed-detail")
    assert page_errors(browser) == []


def test_cancel_from_the_page_kills_the_remote_process(ui: Ui, browser: Any) -> None:
    marker = f"zmesh-ui-cancel-{os.getpid()}"
    cmd = f"echo {marker}; sleep 300; echo after"
    cid = submit(ui, "long run", [ShellActivity("long", cmd=cmd, agent="b")])
    b_pid = ui.agent("b").pid
    assert b_pid is not None
    ui.mesh.wait_for(lambda: processes_with(marker), 30, "the activity's process")
    procs = processes_with(marker)
    assert all(b_pid in ancestors(p) for p in procs), "the activity runs under agent b"
    children = {
        int(d.name)
        for d in Path("/proc").iterdir()
        if d.name.isdigit() and any(p in ancestors(int(d.name)) for p in procs)
    }
    browser.get(ui.page(f"/campaign/{cid}"))
    wait(browser, lambda d: node_states(d).get("long") == "RUNNING", 20, "running")
    mark(browser)
    browser.find_element(By.ID, "cancel").click()
    browser.switch_to.alert.accept()
    wait(browser, lambda d: attr(d, "#campaign-state", "data-state") == "CANCELLED", 20, "cancel")
    wait(browser, lambda d: node_states(d).get("long") == "CANCELLED", 20, "node cancelled")
    shot(browser, "campaign-cancelled")
    ui.mesh.wait_for(lambda: not processes_with(marker), 20, "the process gone")
    ui.mesh.wait_for(
        lambda: not any(Path(f"/proc/{p}").exists() for p in children), 20, "its children gone"
    )
    assert campaign_state(ui, cid) == "CANCELLED"
    assert not_reloaded(browser)
    assert page_errors(browser) == []


def test_data_page_browses_a_remote_agent_and_downloads_a_file(
    ui: Ui, browser: Any, tmp_path: Path
) -> None:
    data = ui.agent("b").home / "data"
    (data / "results" / "run-1").mkdir(parents=True)
    blob = os.urandom(1_300_000)
    (data / "results" / "run-1" / "out.bin").write_bytes(blob)
    (data / "results" / "notes.txt").write_text("notes")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )

    def rows(d: Any) -> dict[str, str]:
        got: dict[str, str] = d.execute_script(
            "const o = {}; for (const r of document.querySelectorAll('#data-entries tbody tr'))"
            " o[r.dataset.name] = r.dataset.kind; return o;"
        )
        return got

    def shown_uri(d: Any) -> str:
        return str(d.execute_script("return document.getElementById('data-uri').textContent"))

    def click(css: str) -> None:
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, css), 20, css)
        browser.find_element(By.CSS_SELECTOR, css).click()

    browser.get(ui.page("/data"))
    wait(browser, lambda d: shown_uri(d) == "a://.", 20, "a's @agentdir shown")
    mark(browser)
    Select(browser.find_element(By.ID, "data-agent")).select_by_value("b")
    wait(browser, lambda d: rows(d).get("results") == "dir", 20, "b's results listed")
    click("tr[data-name='results'] a.dir")
    wait(browser, lambda d: rows(d) == {"notes.txt": "file", "run-1": "dir"}, 20, "results")
    assert shown_uri(browser) == "b://results"
    click("tr[data-name='run-1'] a.dir")
    wait(browser, lambda d: rows(d) == {"out.bin": "file"}, 20, "run-1 listed")
    size = browser.find_element(By.CSS_SELECTOR, "tr[data-name='out.bin'] td.num").text
    assert size == "1.2 MiB"
    shot(browser, "data-remote")
    click("tr[data-name='out.bin'] a.file")
    target = downloads / "out.bin"
    wait(browser, lambda d: target.exists() and target.stat().st_size == len(blob), 30, "download")
    assert target.read_bytes() == blob
    click("#data-up")
    wait(browser, lambda d: rows(d) == {"notes.txt": "file", "run-1": "dir"}, 20, "up")
    assert shown_uri(browser) == "b://results"
    assert not_reloaded(browser)
    assert page_errors(browser) == []


def test_mesh_page_shows_a_killed_agent_dead_without_reload(ui: Ui, browser: Any) -> None:
    browser.get(ui.page("/mesh"))

    def statuses(d: Any) -> dict[str, str]:
        got: dict[str, str] = d.execute_script(
            "const o = {}; for (const r of document.querySelectorAll('#members tbody tr'))"
            " o[r.dataset.member] = r.dataset.status; return o;"
        )
        return got

    wait(browser, lambda d: statuses(d) == {"a": "alive", "b": "alive", "c": "alive"}, 20, "3 up")
    mark(browser)
    shot(browser, "mesh-alive")
    ui.agent("c").kill9()
    wait(browser, lambda d: statuses(d).get("c") == "dead", 60, "c dead")
    assert statuses(browser)["a"] == "alive" and statuses(browser)["b"] == "alive"
    assert not_reloaded(browser)
    shot(browser, "mesh-dead")
    assert page_errors(browser) == []
