"""A studio performer's page when things go wrong for their copy: the browser's storage is
nearly full (a clear message, and the recording goes on), and their consent is revoked
mid-take (the page stops, deletes every chunk it kept, and says so; the server keeps none)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import (
    ServerProcess,
    manifest,
    start_recording,
    stop_recording,
    wait_for,
)
from tests.static.pages import accept_and_join, open_invite, upload_state

pytestmark = pytest.mark.browser

#: The page's own storage, as a test reads it: the chunks it keeps in IndexedDB.
STORED_CHUNKS = """async () => {
    const names = (await indexedDB.databases()).map((d) => d.name);
    let count = 0;
    for (const name of names) {
        const db = await new Promise((ok, no) => {
            const r = indexedDB.open(name); r.onsuccess = () => ok(r.result); r.onerror = no;
        });
        for (const store of db.objectStoreNames) {
            if (!store.includes('chunk')) continue;
            count += await new Promise((ok) => {
                const r = db.transaction(store).objectStore(store).count();
                r.onsuccess = () => ok(r.result);
            });
        }
        db.close();
    }
    return count;
}"""

#: The browser reports its storage 95 % used (a quota a long take may well reach).
NEARLY_FULL = """navigator.storage.estimate = async () => ({usage: 950e6, quota: 1e9});"""


def test_nearly_full_storage_is_said_and_a_revocation_deletes_every_chunk(
    server: ServerProcess, browser: Any
) -> None:
    room = server.create_room("r", profile="studio")
    invite = server.invite(room, "Eve")
    page = open_invite(browser, invite["url"])
    page.add_init_script(NEARLY_FULL)
    page.reload()
    accept_and_join(page)
    page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)
    session = start_recording(server, room)["session_id"]

    warning = page.get_by_test_id("upload-warning")
    warning.wait_for(state="visible", timeout=20000)
    assert "storage is nearly full" in warning.inner_text()
    wait_for(lambda: upload_state(page)["acked"] >= 2, 20, "chunks uploading despite the warning")

    server.api("POST", f"/api/v1/performers/{invite['performer_id']}/revoke", json={"reason": "asked"})
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=10000)
    assert "removed" in page.get_by_test_id("error").inner_text()  # 4403: consent revoked
    # nothing kept in the browser (the recorder's last piece may land just after the close)
    wait_for(lambda: page.evaluate(STORED_CHUNKS) == 0, 10, "the page's chunks deleted", every=0.5)
    uploads = server.data_dir / "uploads" / session / invite["performer_id"]
    assert not list(uploads.rglob("*.chunk"))  # nor on the server
    stop_recording(server, room)
    performer = manifest(server.session_dir(session))["performers"][0]
    assert performer["withdrawn"] and performer["file"] is None
