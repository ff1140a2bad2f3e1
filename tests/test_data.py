"""Toy sets and user files: shapes, repeatability, splits and refusal of bad tables."""

import numpy as np
import pytest
from sklearn.datasets import make_moons

from flowforge.data import TOY_DATASETS, load_points, load_splits, read_table, sample_toy, write_table
from flowforge.errors import FlowforgeError


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_toy_sets_are_2d_finite_and_repeatable(name):
    a, b = sample_toy(name, 500, seed=3), sample_toy(name, 500, seed=3)
    assert a.shape == (500, 2) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, sample_toy(name, 500, seed=4))


def test_moons_is_the_books_data():
    # Same generator and noise as the book: the spread around the arcs matches make_moons(noise=0.05).
    ours = sample_toy("moons", 20000, seed=0)
    ref, _ = make_moons(20000, noise=0.05, random_state=1)
    assert np.allclose(ours.mean(0), ref.mean(0), atol=0.02)
    assert np.allclose(ours.std(0), ref.std(0), atol=0.02)


def test_toy_splits_default_to_3000_training_points_and_fresh_test_points():
    s = load_splits("moons", seed=0)
    assert s.train.shape == (3000, 2) and len(s.test) >= 1000 and len(s.val) >= 1000
    assert not set(map(tuple, s.test.tolist())) & set(map(tuple, s.train.tolist()))


def test_file_splits_are_disjoint_and_complete(tmp_path):
    table = np.random.default_rng(0).normal(size=(100, 3))
    np.save(tmp_path / "t.npy", table)
    s = load_splits(str(tmp_path / "t.npy"), seed=1)
    rows = np.concatenate([s.train, s.val, s.test])
    assert rows.shape == (100, 3) and len(s.test) == 10 and len(s.val) == 10
    assert np.allclose(np.sort(rows[:, 0]), np.sort(table[:, 0].astype(np.float32)))


def test_csv_with_header_round_trips(tmp_path):
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_table(tmp_path / "t.csv", table, header="a,b,c")
    assert np.array_equal(read_table(tmp_path / "t.csv"), table)
    assert load_points(str(tmp_path / "t.csv")).shape == (4, 3)


@pytest.mark.parametrize("content, message", [
    ("1,2\nnan,3\n", "non-finite"),
    ("1,2\ninf,3\n", "non-finite"),
    ("1,2\n3\n", "not a numeric CSV"),
    ("a,b\nc,d\n", "not a numeric CSV"),
    # every message numbers the data rows alike, from 1 below the header
    ("a,b\n1,2\n3,4\n5,nan\n", "non-finite value nan at row 3, column 2"),
    ("a,b\n1,2\n3,4\n5,\n", r"row 3, column 2 holds '', not a number \(a comma at the end of the row\?\)"),
    ("a,b\n1,,2\n", r"row 1, column 2 holds '', not a number\)$"),
    ("a,b\n1,2\n3,4\n5,x\n", r"row 3, column 2 holds 'x', not a number"),
    ("a;b\n1.5;2\n", r"holds .1.5;2., not a number \(its values look separated by semicolons: flowforge reads "
                      r"comma-separated files\)"),
    ("a\tb\n1.5\t2\n", r"separated by tabs"),
    ("a,b\n1,2\n3,4\n5\n", "row 3 has 1 columns, earlier rows 2"),
    # blank lines and comments are not rows (numpy skips them), so they do not shift the numbers
    ("a,b\n# note\n1,2\n\n3,4 # ok\n5,x\n", r"row 3, column 2 holds 'x', not a number"),
    ("a,b\n\n1,2\n# 3,4,5\n3\n", "row 2 has 1 columns, earlier rows 2"),
    ("a,b\n# note\n\n1,2\n5,nan\n", "non-finite value nan at row 2, column 2"),
    ("", "no rows"),
])
def test_bad_csv_is_refused_with_a_reason(tmp_path, content, message):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(FlowforgeError, match=message):
        read_table(tmp_path / "bad.csv")


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(FlowforgeError, match="no such file"):
        read_table(tmp_path / "missing.csv")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(FlowforgeError, match="2-D table"):
        read_table(tmp_path / "cube.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(FlowforgeError, match="plain numeric"):
        read_table(tmp_path / "obj.npy")
    (tmp_path / "t.txt").write_text("1,2\n")
    with pytest.raises(FlowforgeError, match="unsupported"):
        read_table(tmp_path / "t.txt")
    with pytest.raises(FlowforgeError, match="unknown data"):
        load_splits("no-such-toy")


def test_a_byte_order_mark_is_not_part_of_the_first_name_or_number(tmp_path):
    """Excel's "CSV UTF-8" starts the file with U+FEFF: not a column name's first letter, and not a
    reason to take a first row of numbers for a header."""
    from flowforge.data.files import table_columns

    (tmp_path / "named.csv").write_bytes("\ufeffa,b\n1,2\n3,4\n".encode())
    assert table_columns(tmp_path / "named.csv", 2) == ["a", "b"]
    assert read_table(tmp_path / "named.csv").tolist() == [[1, 2], [3, 4]]
    (tmp_path / "bare.csv").write_bytes("\ufeff1,2\n3,4\n".encode())
    assert read_table(tmp_path / "bare.csv").tolist() == [[1, 2], [3, 4]]


def test_integer_columns_are_named_in_one_warning_and_image_arrays_get_a_hint(tmp_path):
    from flowforge.data.files import column_problems, read_table

    table = np.random.default_rng(0).integers(0, 5, (100, 8)).astype(float)
    table[:, 7] = np.random.default_rng(1).random(100)
    problems = column_problems(table, [f"c{i}" for i in range(8)], "t.csv")
    assert len(problems) == 1 and not problems[0][0]
    assert "columns 'c0', 'c1', 'c2', 'c3', 'c4' and 2 more hold only 5 integer values each" in problems[0][1]
    np.save(tmp_path / "images.npy", np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(FlowforgeError, match=r"got shape .4, 1, 8, 8. \(an image array: train an image model on it"):
        read_table(tmp_path / "images.npy")


def test_a_csv_with_every_value_in_quotes_reads_as_numbers(tmp_path):
    # '"0.12","3"' rows (pandas' QUOTE_ALL, some spreadsheet exports) were refused as not numbers
    from flowforge.data.files import read_table, table_columns

    table = np.random.default_rng(0).standard_normal((12, 2))
    lines = ['"a","b"'] + [f'"{x:.6g}","{y:.6g}"' for x, y in table]
    (tmp_path / "q.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "n.csv").write_text("\n".join(lines[1:]) + "\n")  # no header: the first row is data
    assert np.allclose(read_table(tmp_path / "q.csv"), table, atol=1e-5)
    assert np.allclose(read_table(tmp_path / "n.csv"), table, atol=1e-5)
    assert table_columns(tmp_path / "q.csv", 2) == ["a", "b"]


def test_a_header_is_told_from_data_as_r_pandas_and_spreadsheets_write_them(tmp_path):
    # R's write.csv quotes numeric column names ("400","410") over plain rows: still a header, not a row
    from flowforge.data.files import header_names, read_table, table_columns

    table = np.random.default_rng(1).standard_normal((12, 3))
    body = "\n".join(",".join(f"{v:.6g}" for v in row) for row in table) + "\n"
    cases = {'"400","410","420"\n': ["400", "410", "420"],  # R, numeric names
             '"income, usd",b,c\n': ["income, usd", "b", "c"],  # a comma inside a quoted name
             "a,b,c,\n": ["a", "b", "c"],  # a comma ending the header only
             "# a,b,theta\n": ["a", "b", "theta"],  # np.savetxt(..., header="a,b,theta")
             'a, "b", c\n': ["a", "b", "c"],  # a space before a quoted name
             "# exported by tool v1\n": ["exported by tool v1"]}  # a comment of another width: names x0…
    for number, (header, names) in enumerate(cases.items()):
        path = tmp_path / f"t{number}.csv"
        path.write_text(header + body)
        assert np.allclose(read_table(path), table, atol=1e-5), header
        assert header_names(path) == names, header
        assert table_columns(path, 3) == (names if names and len(names) == 3 else ["x0", "x1", "x2"]), header
    # quoted numbers: data in a file that quotes its rows (a blank line after the first, or no other
    # row), a header over plain rows only when every cell is quoted
    quoted = "\n".join(f'"{x:.6g}","{y:.6g}","{z:.6g}"' for x, y, z in table) + "\n"
    for number, (text, rows) in enumerate(((quoted.replace("\n", "\n\n", 1), 12), (quoted.split("\n")[0] + "\n", 1),
                                           ('"1",2,3\n' + body, 13))):
        path = tmp_path / f"q{number}.csv"
        path.write_text(text)
        assert len(read_table(path)) == rows and header_names(path) is None, text[:40]
