"""Indexing a folder: listing, incremental updates, renames, bad files, model mismatch."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time

import numpy as np
import pytest
from search_fixtures import make_folder, png_bomb, stored_rows, tiny_encoder, write_image

from clipforge.index import ImageIndex, IndexStore, ModelMismatchError, index_folder
from clipforge.index.scan import walk_images


class CountingEncoder:
    """Wraps an encoder and counts the images it encodes."""

    def __init__(self, encoder):
        self.inner, self.encoded = encoder, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_pixels(self, pixels):
        self.encoded += len(pixels)
        return self.inner.encode_pixels(pixels)


def run_index(root, db, encoder, **kw):
    """Index ``root`` into ``db``: an index file, or a store opener (the ``make_store`` fixture)."""
    kw.setdefault("num_workers", 0)
    kw.setdefault("progress", False)
    with (db() if callable(db) else IndexStore(db, create=True)) as store:
        return index_folder(root, store, encoder, **kw)


def assert_same_index(db_a, db_b):
    """Same paths, contents and embeddings in two stores (open stores, or index files)."""
    a, b = (stored_rows(IndexStore(db) if isinstance(db, (str, os.PathLike)) else db) for db in (db_a, db_b))
    assert sorted(a) == sorted(b)
    for path in a:
        assert a[path][1] == b[path][1], path
        np.testing.assert_allclose(a[path][2], b[path][2], atol=1e-5, err_msg=path)


# -- listing ---------------------------------------------------------------------------------------
def test_walk_lists_images_and_does_not_follow_links_outside(tmp_path):
    root, outside = tmp_path / "photos", tmp_path / "elsewhere"
    write_image(root / "a.png", 0)
    write_image(root / "sub" / "B.JPG", 1, fmt="JPEG")
    write_image(root / ".hidden" / "c.png", 2)
    (root / "notes.txt").write_text("not an image")
    write_image(outside / "secret.png", 3)
    os.symlink(outside / "secret.png", root / "link_out.png")
    os.symlink(outside, root / "dir_out")
    os.symlink(root / "a.png", root / "sub" / "link_in.png")
    os.symlink(root / "sub", root / "dir_in")  # inside: its files are listed under their real path
    os.symlink(root, root / "sub" / "loop")
    listing = walk_images(root)
    assert [f.path for f in listing.files] == ["a.png", "sub/B.JPG", "sub/link_in.png"]
    assert listing.outside_links == ["dir_out", "link_out.png"]


# -- incremental -----------------------------------------------------------------------------------
def test_incremental_add_change_delete_rename_touch(tmp_path, make_store):
    root, db = tmp_path / "photos", make_store
    make_folder(root, 12)
    enc = CountingEncoder(tiny_encoder())
    first = run_index(root, db, enc, batch_size=5, commit_every=5)
    assert (first.total, first.added, enc.encoded) == (12, 12, 12)
    before = stored_rows(db())

    again = run_index(root, db, enc)  # nothing changed: nothing read
    assert (again.unchanged, again.added, enc.encoded) == (12, 0, 12)

    write_image(root / "new" / "n1.png", 100)
    write_image(root / "new" / "n2.jpg", 101)
    write_image(root / "d0" / "img0000.png", 200)  # changed content, same path
    os.remove(root / "d1" / "img0001.jpg")  # deleted
    os.rename(root / "d2" / "img0002.webp", root / "moved.webp")  # renamed
    t = time.time() + 5
    os.utime(root / "d0" / "img0003.bmp", (t, t))  # touched only
    enc.encoded = 0
    report = run_index(root, db, enc)
    assert (report.added, report.renamed, report.removed, report.touched, report.unchanged) == (3, 1, 1, 1, 8)
    assert enc.encoded == 3  # the rename and the touch were not re-embedded
    after = stored_rows(db())
    assert after["moved.webp"][0] == before["d2/img0002.webp"][0]  # same row, same id
    assert "d1/img0001.jpg" not in after and "d2/img0002.webp" not in after
    assert after["d0/img0000.png"][0] > max(i for i, _, _ in before.values())  # changed file: new row

    run_index(root, lambda: make_store("fresh"), tiny_encoder())
    assert_same_index(db(), make_store("fresh"))


def test_copy_and_swap_reuse_stored_embeddings(tmp_path, make_store):
    root, db = tmp_path / "photos", make_store
    make_folder(root, 4)
    enc = CountingEncoder(tiny_encoder())
    run_index(root, db, enc)
    shutil.copy(root / "d0" / "img0000.png", root / "copy.png")
    a, b = root / "d1" / "img0001.jpg", root / "d2" / "img0002.webp"
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)  # swap the contents of two files (their extensions now lie; Pillow sniffs)
    b.write_bytes(a_bytes)
    enc.encoded = 0
    report = run_index(root, db, enc)
    assert enc.encoded == 0 and report.reused == 3
    run_index(root, lambda: make_store("fresh"), tiny_encoder())
    assert_same_index(db(), make_store("fresh"))


def test_bad_files_are_skipped_listed_and_retried_only_when_changed(tmp_path, make_store):
    root, db = tmp_path / "photos", make_store
    make_folder(root, 3)
    (root / "garbage.jpg").write_bytes(b"this is not a jpeg at all")
    (root / "empty.png").write_bytes(b"")
    good = write_image(tmp_path / "t.png", 9).read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "bomb.png").write_bytes(png_bomb(2000, 2000))  # 4 MP in a few kB; limit below: 1 MP
    enc = CountingEncoder(tiny_encoder())
    report = run_index(root, db, enc, max_pixels=1_000_000)
    assert report.total == 3
    skipped = {s.path: s.reason for s in report.skipped}
    assert sorted(skipped) == ["bomb.png", "empty.png", "garbage.jpg", "truncated.png"]
    assert all(skipped.values()) and "max_pixels" in skipped["bomb.png"]
    enc.encoded = 0
    again = run_index(root, db, enc, max_pixels=1_000_000)  # unchanged broken files: not retried, listed
    assert enc.encoded == 0 and sorted(s.path for s in again.skipped) == sorted(skipped)
    (root / "garbage.jpg").write_bytes(good)  # fixed (a PNG named .jpg: decoded by content)
    (root / "empty.png").unlink()
    fixed = run_index(root, db, enc, max_pixels=1_000_000)
    assert enc.encoded == 1 and fixed.total == 4
    assert [s.path for s in fixed.skipped] == ["bomb.png", "truncated.png"]


def test_model_mismatch_is_an_error_unless_rebuild(tmp_path, make_store):
    root, db = tmp_path / "photos", make_store
    make_folder(root, 3)
    run_index(root, db, tiny_encoder(seed=0))
    other = tiny_encoder(seed=1)
    with pytest.raises(ModelMismatchError, match="rebuild"):
        run_index(root, db, other)
    with pytest.raises(ModelMismatchError, match="built with model"):
        ImageIndex.open(db(), encoder=other)
    report = run_index(root, db, other, rebuild=True)
    assert report.added == 3 and db().count() == 3
    ImageIndex.open(db(), encoder=other)  # now fine
    with pytest.raises(ModelMismatchError):
        ImageIndex.open(db(), encoder=tiny_encoder(seed=0))


def test_another_folder_into_the_same_db_is_an_error(tmp_path, make_store):
    make_folder(tmp_path / "a", 2)
    make_folder(tmp_path / "b", 2)
    enc = tiny_encoder()
    run_index(tmp_path / "a", make_store, enc)
    with pytest.raises(ValueError, match="indexes folder"):
        run_index(tmp_path / "b", make_store, enc)


def test_workers_and_float16_storage(tmp_path):
    root = tmp_path / "photos"
    make_folder(root, 10)
    enc = tiny_encoder()
    run_index(root, tmp_path / "w.cfidx", enc, num_workers=2, batch_size=3, dtype="float16")
    run_index(root, tmp_path / "s.cfidx", enc, num_workers=0)
    with IndexStore(tmp_path / "w.cfidx") as a, IndexStore(tmp_path / "s.cfidx") as b:
        ids_a, va, _ = a.load_embeddings()
        ids_b, vb, _ = b.load_embeddings()
        assert a.dtype == "float16" and len(ids_a) == len(ids_b) == 10
        pa, pb = a.paths_of(ids_a), b.paths_of(ids_b)
        order_a = np.argsort([pa[i] for i in ids_a])
        order_b = np.argsort([pb[i] for i in ids_b])
        np.testing.assert_allclose(va[order_a], vb[order_b], atol=2e-3)


# -- searching -------------------------------------------------------------------------------------
def test_search_by_text_image_and_both(tmp_path, make_store):
    root, db = tmp_path / "photos", make_store
    make_folder(root, 9)
    enc = tiny_encoder()
    run_index(root, db, enc)
    index = ImageIndex.open(db(), encoder=enc)
    assert index.kind == {"sqlite": "exact", "qdrant": "qdrant"}[db.kind] and len(index) == 9
    hits = index.search(image=root / "d1" / "img0004.gif", k=3)
    assert hits[0].path == "d1/img0004.gif" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    text_hits = index.search(text="a dog on a beach", k=20)
    assert len(text_hits) == 9 and len({h.id for h in text_hits}) == 9
    both = index.search(text="a dog", image=root / "d1" / "img0004.gif", k=9, image_weight=0.9)
    assert both[0].path == "d1/img0004.gif"
    with pytest.raises(ValueError, match="text query"):
        index.search(text="  ", k=3)
    with pytest.raises(ValueError, match="k must be"):
        index.search(text="x", k=0)


def test_index_refreshes_when_the_database_changes(tmp_path, make_store):
    root, db = tmp_path / "photos", make_store
    make_folder(root, 3)
    enc = tiny_encoder()
    run_index(root, db, enc)
    index = ImageIndex.open(db(), encoder=enc)
    index.refresh_seconds = 0.0
    assert not index.refresh()
    write_image(root / "late.png", 77)
    run_index(root, db, enc)
    assert index.refresh() and len(index) == 4
    assert index.search(image=root / "late.png", k=1)[0].path == "late.png"


def test_database_is_in_wal_mode(tmp_path):
    make_folder(tmp_path / "p", 1)
    run_index(tmp_path / "p", tmp_path / "i.cfidx", tiny_encoder())
    with sqlite3.connect(tmp_path / "i.cfidx") as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_foreign_files_are_refused_untouched(tmp_path):
    from clipforge.index import IndexDatabaseError

    garbage = tmp_path / "garbage.cfidx"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(IndexDatabaseError, match="not a clipforge index"):
        IndexStore(garbage)
    with pytest.raises(IndexDatabaseError, match="not a clipforge index"):
        IndexStore(garbage, create=True)
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE notes (x TEXT)")
    with pytest.raises(IndexDatabaseError, match="not a clipforge index"):
        IndexStore(foreign, create=True)
    with sqlite3.connect(foreign) as c:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        mode = c.execute("PRAGMA journal_mode").fetchone()[0]
    assert tables == ["notes"] and mode == "delete"
    with pytest.raises(FileNotFoundError, match="no index database"):
        IndexStore(tmp_path / "missing.cfidx")


def test_a_new_database_packs_several_embeddings_per_page_and_an_old_one_keeps_its_pages(tmp_path):
    from clipforge.index.schema import PAGE_SIZE
    from clipforge.index.store import NewRow

    rng = np.random.default_rng(0)
    sizes = {}
    for name, page in (("new", None), ("old", 4096)):
        db = tmp_path / f"{name}.cfidx"
        if page:  # a database made before: SQLite's default page size
            with sqlite3.connect(db) as conn:
                conn.execute(f"PRAGMA page_size={page}")
                conn.execute("VACUUM")
        store = IndexStore(db, create=True)
        store.bind(model_id="m", embed_dim=512, root=tmp_path)
        vectors = rng.standard_normal((2000, 512)).astype(np.float32)  # (N, 512): 2,048-byte blobs
        with store.transaction() as c:
            store.insert(c, (NewRow(f"photos/img_{i:05d}.jpg", 1, 1, f"{i:064x}", v) for i, v in enumerate(vectors)))
        assert store._conn().execute("PRAGMA page_size").fetchone()[0] == (page or PAGE_SIZE)
        got = store.embeddings_of([1, 2000])
        np.testing.assert_array_equal(got[2000], vectors[-1])
        store.close()
        sizes[name] = db.stat().st_size / len(vectors)
    assert sizes["new"] < 2600 < 4000 < sizes["old"], sizes  # bytes per row: one row per 4 KiB page before
