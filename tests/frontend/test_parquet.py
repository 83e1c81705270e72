"""Data from Parquet: the driver reads metadata and counts the index columns (one streamed pass: it holds
neither the data nor the index columns); a shard's reader builds
exactly the block that the in-memory path would send it, reading only the row groups (and, under
a feature split, the columns) it holds; bad files give clear errors."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import claygraph as cg
from claygraph.examples import hier_logistic_model
from claygraph.frontend import parquet
from claygraph.partition.plan import candidate_with_layout, layout_for
from claygraph.partition.program import data_specs, internal_data, shard_blocks


def write_table(path, rows=600, products=13, d=3, seed=0, row_group_size=50):
    rng = np.random.default_rng(seed)
    cols = {f"x{j}": rng.normal(size=rows).astype(np.float32) for j in range(d)}
    cols["price"] = rng.normal(size=rows).astype(np.float32)
    cols["product_id"] = np.minimum(rng.zipf(1.6, rows) - 1, products - 1).astype(np.int64)
    cols["y"] = (rng.random(rows) < 0.4).astype(np.float32)
    pq.write_table(pa.table(cols), path, row_group_size=row_group_size)
    return cols


def specs(d=3, products=13):
    return dict(X=([f"x{j}" for j in range(d)], "row", "feature"), price=("price", "row"), y=("y", "row"),
                g=cg.parquet.index_column("product_id", "row", into="product", size=products))


def in_memory(cols, d=3, products=13):
    X = np.stack([cols[f"x{j}"] for j in range(d)], axis=1)
    return cg.Data(X=cg.array(X, "row", "feature"), price=cg.array(cols["price"], "row"), y=cg.array(cols["y"], "row"),
                   g=cg.index(cols["product_id"].astype(np.int32), "row", into="product", size=products))


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "sales.parquet"
    return path, write_table(path)


def test_driver_reads_metadata_and_index_columns_only(table):
    path, cols = table
    parquet.READ_LOG.clear()
    data = cg.Data.from_parquet(path, **specs())
    assert {e["array"] for e in parquet.READ_LOG} == {"g"}
    assert all(e["columns"] == ["product_id"] for e in parquet.READ_LOG)
    assert data.has_sources and data.has_values and data.size("row") == 600 and data.size("feature") == 3
    assert data.arrays["X"].is_abstract and data.arrays["X"].shape == (600, 3)
    g = data.arrays["g"]  # counted, not held: its rows per product are what a group split's layout needs
    assert g.is_abstract and g.source is not None and g.into == "product" and g.shape == (600,)
    np.testing.assert_array_equal(g.counts, np.bincount(cols["product_id"], minlength=13))
    loaded = data.load()
    assert not loaded.has_sources
    np.testing.assert_array_equal(loaded.X, in_memory(cols).X)
    np.testing.assert_array_equal(loaded.g, cols["product_id"])
    assert loaded.g.dtype == np.int32
    assert "X: float32[row=600, feature=3]" in repr(data)


@pytest.mark.parametrize("split", [(), ("row",), ("product",), ("feature",)])
def test_every_shard_block_equals_the_in_memory_block(table, split):
    """The in-memory path's blocks (its layout made from the index column in memory) against a reader's,
    whose layout was made from the files (the index column counted by the driver, each shard's rows found by
    the reader's own passes over the column)."""
    path, cols = table
    mem, files = in_memory(cols), cg.Data.from_parquet(path, **specs())
    plan = cg.partition(hier_logistic_model, files, cluster=cg.ClusterSpec.local(devices=3), split=split)
    layout = layout_for(plan.chosen.split, plan.graph, mem, 3)
    cand = candidate_with_layout(plan.graph, plan.chosen.split, layout, plan.cluster, 3)
    spec, internal = data_specs(plan.graph, cand), internal_data(plan.graph, cand, mem)
    read_layout = layout_for(plan.chosen.split, plan.graph, files, 3)
    remapped = cand.propagation.remapped
    for shard in (0, 1, 2, 1, 0):  # (back and forth: a reader's kept row plan is its shard's alone)
        expected = shard_blocks(spec, internal, 3, shard)
        for name in ("X", "price", "y", "g"):
            vid = plan.graph.inputs.data[name]
            axis = next((i for i, a in enumerate(spec[name]) if a is not None), None)
            remap = read_layout[remapped[vid]].inverse() if vid in remapped else None
            parquet.READ_LOG.clear()
            got = parquet.read_block(files.arrays[name].source, plan.graph.value(vid).dims, read_layout, axis,
                                     shard, 3, remap)
            np.testing.assert_array_equal(got, expected[name], err_msg=f"{split} shard {shard} {name}")
            rows_read = sum(e["rows"] for e in parquet.READ_LOG)
            if name == "X":  # read feature-major: the same block, transposed
                np.testing.assert_array_equal(parquet.read_block(files.arrays[name].source, plan.graph.value(vid).dims,
                                                                 read_layout, axis, shard, 3, None, transposed=True),
                                              expected[name].T)
            if split == ("row",) and name != "g":  # a contiguous third of 600 rows: its 4 row groups of 50
                assert rows_read == 200
            if split == ("product",) and name in ("X", "price"):  # the shard's rows found in two passes over the
                # index column (by its first array; the next ones keep its row plan)
                passes = [e["rows"] for e in parquet.READ_LOG if e["columns"] == ["product_id"]]
                assert passes == ([600, 600] if name == "X" else [])
            if split == ("feature",) and name == "X":  # every row, but this shard's column only
                assert {c for e in parquet.READ_LOG for c in e["columns"]} == {f"x{shard}"}


@given(rows=st.integers(1, 120), group_size=st.integers(1, 40), batch=st.integers(1, 50), seed=st.integers(0, 10**6))
def test_read_any_rows_in_any_order(tmp_path_factory, rows, group_size, batch, seed):
    """Any rows (repeats, any order) and columns (any order, repeats), whatever the row groups and the
    batches they are streamed in: the values the in-memory table holds there."""
    path = tmp_path_factory.mktemp("pq") / "t.parquet"
    cols = write_table(path, rows=rows, products=5, row_group_size=group_size, seed=seed)
    data = cg.Data.from_parquet(path, **specs(products=5))
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, rows, size=2 * rows)
    which = rng.integers(0, 3, size=rng.integers(1, 5))
    X = np.stack([cols[f"x{j}"] for j in range(3)], axis=1)
    before, parquet.BATCH_ROWS = parquet.BATCH_ROWS, batch
    try:
        parquet.READ_LOG.clear()
        got = parquet.read(data.arrays["X"].source, rows=pick, columns=np.array([2, 0]))
        np.testing.assert_array_equal(got, np.stack([cols["x2"], cols["x0"]], axis=1)[pick])
        groups = {(e["file"], g) for e in parquet.READ_LOG for g in e["row_groups"]}
        assert len(groups) == len(set(pick // group_size))  # only the row groups that hold the rows
        np.testing.assert_array_equal(parquet.read(data.arrays["X"].source, columns=which), X[:, which])
        feature_major = parquet.read(data.arrays["X"].source, rows=pick, columns=which, transposed=True)
        np.testing.assert_array_equal(feature_major, X[pick][:, which].T)
        np.testing.assert_array_equal(parquet.read(data.arrays["y"].source, rows=pick[::-1]), cols["y"][pick[::-1]])
        np.testing.assert_array_equal(parquet.read(data.arrays["y"].source, rows=pick[:0]), cols["y"][:0])
    finally:
        parquet.BATCH_ROWS = before


def test_a_reader_holds_its_result_and_one_batch_not_the_table(tmp_path):
    """Reading streams row group by row group in batches: the process's allocations at their peak are the
    result, the requested rows' order (two int64 per row, none for a whole read) and about one batch's
    columns (the whole table read first, then cut, held it several times: its Arrow table, each column's
    NumPy copy and their stack)."""
    import tracemalloc

    rows, d = 400_000, 8
    rng = np.random.default_rng(0)
    cols = {f"x{j}": rng.normal(size=rows) for j in range(d)}  # float64 on disk, float32 in memory
    pq.write_table(pa.table(cols), tmp_path / "wide.parquet", row_group_size=100_000)
    src = cg.Data.from_parquet(tmp_path / "wide.parquet", X=(list(cols), "row", "feature")).arrays["X"].source
    batch = 10_000
    before, parquet.BATCH_ROWS = parquet.BATCH_ROWS, batch
    try:
        half = np.sort(rng.choice(rows, rows // 2, replace=False))
        for pick, expect in ((None, rows), (half, rows // 2)):
            tracemalloc.start()
            out = parquet.read(src, rows=pick)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            result = expect * d * 4
            index = 0 if pick is None else 2 * 8 * pick.size  # the rows' order and its sorted copy, int64
            assert out.shape == (expect, d) and out.nbytes == result
            assert peak < result + index + 40 * batch * 8, (peak, result)  # a few float64 columns of one batch
        np.testing.assert_array_equal(out, np.stack([cols[c] for c in cols], axis=1).astype(np.float32)[half])
    finally:
        parquet.BATCH_ROWS = before


def test_potential_from_files_equals_in_memory_on_two_devices(table):
    path, cols = table
    files, mem = cg.Data.from_parquet(path, **specs()), in_memory(cols)
    params = {k: np.full(s, 0.1, np.float32) for k, s in cg.lower(hier_logistic_model, mem).param_shapes.items()}
    ref = cg.compile(cg.partition(hier_logistic_model, mem, split=())).potential_and_grad(params)
    for split in [("row",), ("product",)]:
        plan = cg.partition(hier_logistic_model, files, cluster=cg.ClusterSpec.local(devices=2), split=split)
        v, g = cg.compile(plan, runtime=cg.runtime.Local(devices=2)).potential_and_grad(params)
        assert float(v) == pytest.approx(float(ref[0]), rel=1e-5)
        for k in g:
            np.testing.assert_allclose(g[k], ref[1][k], rtol=1e-4, atol=1e-4)


def test_map_on_file_backed_data(table):
    path, cols = table
    fit = cg.infer.map(hier_logistic_model, cg.Data.from_parquet(path, **specs()))
    ref = cg.infer.map(hier_logistic_model, in_memory(cols))
    assert fit.objective == pytest.approx(ref.objective, rel=1e-5)
    np.testing.assert_allclose(fit.params["w"], ref.params["w"], atol=1e-3)


def test_a_folder_of_files_is_one_table(tmp_path):
    a, b = write_table(tmp_path / "part-0.parquet", rows=70, seed=1), write_table(tmp_path / "part-1.parquet",
                                                                                 rows=30, seed=2)
    data = cg.Data.from_parquet(tmp_path, **specs()).load()
    np.testing.assert_array_equal(data.y, np.concatenate([a["y"], b["y"]]))
    assert data.size("row") == 100


def test_errors_name_the_column_and_the_place(tmp_path):
    path = tmp_path / "t.parquet"
    cols = write_table(path)
    with pytest.raises(cg.errors.DataError, match=r"column\(s\) \['nope'\] not in"):
        cg.Data.from_parquet(path, y=("nope", "row"))
    with pytest.raises(cg.errors.DataError, match="does not exist"):
        cg.Data.from_parquet(tmp_path / "missing.parquet", y=("y", "row"))
    with pytest.raises(cg.errors.DataError, match="index 'g' .* must hold integers"):
        cg.Data.from_parquet(path, g=cg.parquet.index_column("price", "row", into="product"))
    first = int(np.flatnonzero(cols["product_id"] >= 2)[0])  # (counted in one streamed pass: named by its row)
    with pytest.raises(cg.errors.DataError, match=rf"index 'g' \(column 'product_id'\) has value "
                                                  rf"{cols['product_id'][first]} at row {first} \(file .*t.parquet, "
                                                  rf"row group {first // 50}\), outside \[0, 2\) of dim 'product'"):
        cg.Data.from_parquet(path, g=cg.parquet.index_column("product_id", "row", into="product", size=2))
    negative = dict(cols, product_id=np.where(np.arange(600) == 437, -3, cols["product_id"]))
    pq.write_table(pa.table(negative), tmp_path / "neg.parquet", row_group_size=50)
    with pytest.raises(cg.errors.DataError, match=r"has value -3 at row 437 .*row group 8\), outside"):
        cg.Data.from_parquet(tmp_path / "neg.parquet", g=cg.parquet.index_column("product_id", "row", into="product"))
    with pytest.raises(cg.errors.DataError, match="needs 2 dim name"):
        cg.Data.from_parquet(path, X=(["x0", "x1"], "row"))
    cols["price"][123] = np.nan
    pq.write_table(pa.table(cols), path, row_group_size=50)
    data = cg.Data.from_parquet(path, price=("price", "row"))  # not read yet: the driver reads no values
    with pytest.raises(cg.errors.DataError, match=r"column .price. has a non-finite value nan at row 123 .*group 2"):
        data.load()
    pq.write_table(pa.table({"y": pa.array([1.0, None, 2.0], pa.float32())}), path)
    with pytest.raises(cg.errors.DataError, match="1 missing"):
        cg.Data.from_parquet(path, y=("y", "row")).load()


def test_an_index_columns_target_size_is_given_or_read_from_the_column(tmp_path):
    """size= wins; without it the target dim spans the column's ids up to the largest (README's example);
    an empty column with no size is an error naming the Parquet spec's size=."""
    path = tmp_path / "t.parquet"
    cols = write_table(path, products=13)
    largest = int(cols["product_id"].max())
    inferred = cg.Data.from_parquet(path, y=("y", "row"),
                                    g=cg.parquet.index_column("product_id", "row", into="product"))
    assert inferred.size("product") == largest + 1
    given = cg.Data.from_parquet(path, g=cg.parquet.index_column("product_id", "row", into="product", size=40))
    assert given.size("product") == 40
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"product_id": np.zeros(0, np.int64), "y": np.zeros(0, np.float32)}), empty)
    with pytest.raises(cg.errors.DataError, match=r"index_column\(\.\.\., into='product', size=N\)"):
        cg.Data.from_parquet(empty, g=cg.parquet.index_column("product_id", "row", into="product"))


def test_a_block_read_from_files_becomes_its_device_array_without_a_copy(table):
    """The reader's result starts on a 64-byte boundary, which XLA's CPU client uses in place: the worker's
    device array is the block read, not a second copy of it."""
    import jax

    path, cols = table
    src = cg.Data.from_parquet(path, **specs()).arrays["X"].source
    for block in (parquet.read(src), parquet.read(src, rows=np.arange(0, 600, 3), transposed=True),
                  parquet.read(cg.Data.from_parquet(path, **specs()).arrays["y"].source, rows=np.arange(5))):
        assert block.ctypes.data % parquet.ALIGN == 0 and block.flags.c_contiguous
        assert jax.device_put(block).unsafe_buffer_pointer() == block.ctypes.data


def test_every_column_type_the_driver_accepts_reads_in_batches(tmp_path):
    """Booleans (read as 0/1 float32), float64 (as float32) and integers, whatever the batch cuts."""
    rows = 37
    rng = np.random.default_rng(3)
    cols = {"flag": rng.random(rows) < 0.5, "wide": rng.normal(size=rows), "count": rng.integers(0, 9, rows)}
    pq.write_table(pa.table(cols), tmp_path / "t.parquet", row_group_size=10)
    data = cg.Data.from_parquet(tmp_path / "t.parquet", flag=("flag", "row"), wide=("wide", "row"),
                                count=("count", "row"))
    before, parquet.BATCH_ROWS = parquet.BATCH_ROWS, 4
    try:
        pick = rng.integers(0, rows, 50)
        for name in cols:
            src = data.arrays[name].source
            expected = cols[name].astype(src.dtype)
            np.testing.assert_array_equal(parquet.read(src), expected)
            np.testing.assert_array_equal(parquet.read(src, rows=pick), expected[pick])
    finally:
        parquet.BATCH_ROWS = before


def test_files_named_by_url_read_through_pyarrows_file_systems(tmp_path):
    """A folder or files named by URL (file:// here; s3://, gs://, hdfs:// alike where pyarrow has the file
    system) read as the same paths do, on the driver and in every reader; a URL that names nothing, or a
    scheme pyarrow has no file system for, is a DataError naming it."""
    a, b = write_table(tmp_path / "part-0.parquet", rows=70, seed=1), write_table(tmp_path / "part-1.parquet",
                                                                                 rows=30, seed=2)
    by_path = cg.Data.from_parquet(tmp_path, **specs())
    for where in (f"file://{tmp_path}", [f"file://{tmp_path}/part-0.parquet", f"file://{tmp_path}/part-1.parquet"]):
        by_url = cg.Data.from_parquet(where, **specs())
        assert all(f.file.startswith("file://") for f in by_url.arrays["X"].source.fragments)
        loaded = by_url.load()
        np.testing.assert_array_equal(loaded.y, np.concatenate([a["y"], b["y"]]))
        np.testing.assert_array_equal(loaded.X, by_path.load().X)
        rows = np.array([99, 3, 70, 69])
        np.testing.assert_array_equal(parquet.read(by_url.arrays["price"].source, rows=rows),
                                      np.concatenate([a["price"], b["price"]])[rows])
    with pytest.raises(cg.errors.DataError, match="does not exist"):
        cg.Data.from_parquet(f"file://{tmp_path}/missing.parquet", y=("y", "row"))
    with pytest.raises(cg.errors.DataError, match="cannot open 'nosuch://"):
        cg.Data.from_parquet("nosuch://bucket/table", y=("y", "row"))
    with pytest.raises(cg.errors.DataError, match="is a folder"):
        cg.Data.from_parquet([f"file://{tmp_path}"], y=("y", "row"))


def test_a_deterministic_site_on_file_backed_data_is_left_out_and_said_so(table):
    """The driver constrains draws with stand-ins for the files' arrays (it reads none): a deterministic site
    computed from them would be silently wrong, so it is left out with a warning; one that depends on the
    draws alone is computed as NumPyro computes it."""
    import numpyro
    import numpyro.distributions as dist

    from claygraph.infer.common import constrain_draws

    def model(data):
        s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
        numpyro.deterministic("twice_s", 2.0 * s)
        with numpyro.plate("product", data.size("product")):
            a = numpyro.sample("a", dist.Normal(0.0, s))
        numpyro.deterministic("a_of_row", a[data.g])  # needs the index column's values
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Bernoulli(logits=a[data.g]), obs=data.y)

    path, cols = table
    files = cg.Data.from_parquet(path, y=("y", "row"),
                                 g=cg.parquet.index_column("product_id", "row", into="product", size=13))
    draws = {"s": np.full((2,), 0.5, np.float32), "a": np.ones((2, 13), np.float32)}
    with pytest.warns(UserWarning, match=r"deterministic site 'a_of_row' depends on data in files \(g\)"):
        out = constrain_draws(model, files, draws)
    assert "a_of_row" not in out and set(out) == {"s", "twice_s", "a"}
    np.testing.assert_allclose(out["twice_s"], 2 * np.exp(0.5), rtol=1e-6)
    loaded = constrain_draws(model, files.load(), draws)  # in memory: computed
    np.testing.assert_array_equal(loaded["a_of_row"], np.ones((2, 600), np.float32))


def test_routed_reads_in_small_batches_with_an_empty_shard_and_uint64_ids(tmp_path, monkeypatch):
    """Batches smaller than a row group, a shard that owns no rows (it reads row 0 for its padding, as the
    in-memory layout does) and an unsigned 64-bit id column: the blocks equal the in-memory path's."""
    rng = np.random.default_rng(4)
    rows = 300
    cols = {f"x{j}": rng.normal(size=rows).astype(np.float32) for j in range(3)}
    cols.update(price=rng.normal(size=rows).astype(np.float32), y=(rng.random(rows) < 0.5).astype(np.float32),
                product_id=(rng.random(rows) < 0.3).astype(np.uint64))  # rows in products 0 and 1 only
    path = tmp_path / "two.parquet"
    pq.write_table(pa.table(cols), path, row_group_size=50)
    monkeypatch.setattr(parquet, "BATCH_ROWS", 7)
    files = cg.Data.from_parquet(path, **specs())
    mem = in_memory(dict(cols, product_id=cols["product_id"].astype(np.int64)))
    plan = cg.partition(hier_logistic_model, files, cluster=cg.ClusterSpec.local(devices=3), split=("product",))
    layout = layout_for(plan.chosen.split, plan.graph, mem, 3)
    read_layout = layout_for(plan.chosen.split, plan.graph, files, 3)
    assert 0 in read_layout["row"].counts  # a shard without rows
    cand = candidate_with_layout(plan.graph, plan.chosen.split, layout, plan.cluster, 3)
    spec, internal = data_specs(plan.graph, cand), internal_data(plan.graph, cand, mem)
    remapped = cand.propagation.remapped
    for shard in range(3):
        expected = shard_blocks(spec, internal, 3, shard)
        for name in ("X", "y", "g"):
            vid = plan.graph.inputs.data[name]
            axis = next((i for i, a in enumerate(spec[name]) if a is not None), None)
            remap = read_layout[remapped[vid]].inverse() if vid in remapped else None
            got = parquet.read_block(files.arrays[name].source, plan.graph.value(vid).dims, read_layout, axis,
                                     shard, 3, remap)
            np.testing.assert_array_equal(got, expected[name], err_msg=f"shard {shard} {name}")
    parquet.forget_row_plans()


def test_a_file_changed_after_it_was_counted_is_an_error_not_a_wrong_layout(table):
    """The workers' passes over the index column trust the driver's counts only as far as they check them: a
    file rewritten in between (other ids, the same rows) gives DataError, never an out-of-bounds write."""
    path, cols = table
    files = cg.Data.from_parquet(path, **specs())
    plan = cg.partition(hier_logistic_model, files, cluster=cg.ClusterSpec.local(devices=2), split=("product",))
    read_layout = layout_for(plan.chosen.split, plan.graph, files, 2)
    pq.write_table(pa.table(dict(cols, product_id=np.zeros(600, np.int64))), path, row_group_size=50)
    vid = plan.graph.inputs.data["y"]
    with pytest.raises(cg.errors.DataError, match="does not match the layout made from it"):
        for shard in range(2):
            parquet.read_block(files.arrays["y"].source, plan.graph.value(vid).dims, read_layout, 0, shard, 2, None)
    parquet.forget_row_plans()
