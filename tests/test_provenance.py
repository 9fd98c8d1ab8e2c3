from gmn_inr.provenance import files_digest, machine_meta


def test_files_digest_tells_byte_identical_trees_from_different_ones(tmp_path):
    for root in ("a", "b"):
        (tmp_path / root / "x").mkdir(parents=True)
        (tmp_path / root / "x" / "MLP.safetensors").write_bytes(b"weights")
        (tmp_path / root / "HASH.safetensors").write_bytes(b"table")
        (tmp_path / root / "notes.txt").write_text("not an INR file")
    a, b = files_digest(tmp_path / "a"), files_digest(tmp_path / "b")
    assert a == b and a["files"] == 2
    (tmp_path / "b" / "HASH.safetensors").write_bytes(b"tablf")           # one byte
    assert files_digest(tmp_path / "b")["sha256"] != a["sha256"]
    (tmp_path / "b" / "HASH.safetensors").rename(tmp_path / "b" / "TRI.safetensors")
    (tmp_path / "b" / "TRI.safetensors").write_bytes(b"table")           # same bytes, another name
    assert files_digest(tmp_path / "b")["sha256"] != a["sha256"]


def test_machine_meta_names_what_float_results_depend_on():
    m = machine_meta()
    assert set(m) == {"cpu", "cpu_capability", "torch", "threads"}
    assert m["threads"] >= 1 and m["cpu"]
