"""First contact: what a new user runs and reads (formats, errors, output, imports, the README)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from gmai_build.cli import SUBCOMMANDS, main
from gmai_build.config import BuildSettings, IntensityConfig, OptionCount, SlicingConfig, SourceConfig
from gmai_build.converters import BUILTIN, format_names, get_converter
from gmai_build.formats import option_rows
from helpers import REPO, copy_example, run_cli, write_yaml

README = (REPO / "README.md").read_text()


# Formats and options ---------------------------------------------------------------------------
def test_builtin_table_names_each_converter_by_its_format() -> None:
    for name in BUILTIN:
        assert get_converter(name).format == name


def test_formats_lists_every_format(capsys) -> None:
    assert main(["formats"]) == 0
    out = capsys.readouterr().out
    for name in BUILTIN:
        assert re.search(rf"^{name}\s+\S", out, re.M), name


def test_formats_name_prints_options_from_the_model(capsys) -> None:
    assert main(["formats", "csv_table"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert re.search(r"^table\s+str\s+required\s+path relative to the source root", out, re.M)
    assert re.search(r"^label_columns\s+list\[str\] \| None\s+null\s+one-hot columns", out, re.M)
    assert re.search(r"^image_suffix\s+str\s+''\s+appended to each image cell", out, re.M)
    assert set(get_converter("csv_table").Options.model_fields) <= set(lines)


def test_every_option_has_a_description() -> None:
    for name in format_names():
        for option, _, _, description in option_rows(get_converter(name).Options):
            assert description, f"{name}.{option} has no Field(description=...)"


def test_unknown_format_name_suggests(capsys) -> None:
    assert main(["formats", "csvtable"]) == 1
    assert "unknown format 'csvtable' (did you mean 'csv_table'?)" in capsys.readouterr().err


def test_unknown_option_lists_the_valid_ones(tmp_path: Path, capsys) -> None:
    sources = copy_example(tmp_path)
    data = yaml.safe_load(sources.read_text())
    data["sources"][1]["options"]["patient_colum"] = "patient"
    write_yaml(sources, data)
    assert main(["validate", "--sources", str(sources)]) == 1
    err = capsys.readouterr().err
    assert "options.patient_colum: unknown option 'patient_colum' for format 'csv_table' " \
           "(did you mean 'patient_column'?); valid options: table, image_column" in err
    assert "image_root" in err and "label_separator" in err


# The README documents every option ------------------------------------------------------------
def _format_row(name: str) -> str:
    rows = [line for line in README.splitlines() if line.startswith(f"| `{name}` |")]
    assert len(rows) == 1, f"README's format table has no row for {name}"
    return rows[0]


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_readme_format_table_names_every_option(name: str) -> None:
    row = _format_row(name)
    missing = [o for o in get_converter(name).Options.model_fields if f"`{o}`" not in row]
    assert not missing, f"README's row for {name} does not mention options {missing}"


def test_readme_sources_yaml_names_every_key() -> None:
    block = README.split("## `sources.yaml`", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    keys = set(re.findall(r"^\s*([a-z_]+):", block, re.M)) | set(re.findall(r"[{,]\s*([a-z_]+):", block))
    for model in (BuildSettings, SourceConfig, IntensityConfig, SlicingConfig, OptionCount):
        missing = [k for k in model.model_fields if k not in keys]
        assert not missing, f"README's sources.yaml block does not show {model.__name__} keys {missing}"


def test_label_map_shape_is_documented() -> None:
    doc = (REPO / "label_maps" / "README.md").read_text()
    example = yaml.safe_load(doc.split("```yaml", 1)[1].split("```", 1)[0])
    assert {"labels", "drop", "default", "department", "new_labels"} <= set(re.findall(r"`(\w+)`", doc))
    assert set(example) >= {"labels", "department", "new_labels", "default"}
    assert {"label", "task", "department", "modalities"} <= set(example["new_labels"][0])


# Output -----------------------------------------------------------------------------------------
def test_build_prints_a_short_summary(tmp_path: Path) -> None:
    proc = run_cli("--sources", str(copy_example(tmp_path)), "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # the VAL/TEST split is a function of the salted group: counts depend on the key
    assert re.fullmatch(r"GMAI-example: 32 questions \(TEST \d+, VAL \d+\)", lines[0]), lines[0]
    assert "  by granularity: Image Level 32" in lines
    assert "  by source: fundus-findings 16, fundus-laterality 16" in lines
    assert str(tmp_path / "o" / "GMAI-example_VAL.tsv") in proc.stdout
    assert re.match(r"  published tree covered: tasks \d+/18, departments \d+/19, modalities 1/38, ",
                    lines[-1])
    assert len(lines) <= 7 and "## By" not in proc.stdout
    assert proc.stderr == ""  # no progress bars when stderr is not a terminal


def test_quiet_build_prints_nothing(tmp_path: Path) -> None:
    proc = run_cli("-q", "--sources", str(copy_example(tmp_path)), "--out", str(tmp_path / "o"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert (tmp_path / "o" / "GMAI-example_TEST.tsv").is_file()


@pytest.mark.parametrize("args", [["formats"], ["formats", "csv_table"], ["--sources", "S", "--out", "O"]])
def test_closed_pipe_ends_without_traceback(tmp_path: Path, args: list[str]) -> None:
    """``gmai-build ... | head`` where head has already exited: no traceback, exit 141."""
    if "S" in args:
        paths = {"S": str(copy_example(tmp_path)), "O": str(tmp_path / "o")}
        args = [paths.get(a, a) for a in args]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        proc = subprocess.run([sys.executable, "-m", "gmai_build.cli", *args], stdout=write,
                              stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    assert proc.returncode == 141
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_subcommand_table_resolves() -> None:
    import importlib

    for name, (target, help_text) in SUBCOMMANDS.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(f"gmai_build.{module}"), function)), name
        assert help_text


# Imports: no torch, and optional packages only where used ---------------------------------------
def test_import_and_build_do_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import gmai_build\n"
        "from gmai_build.cli import main\n"
        f"assert main(['-q', '--sources', {str(copy_example(tmp_path))!r}, '--out', "
        f"{str(tmp_path / 'o')!r}]) == 0\n"
        f"assert main(['validate', '-q', '--sources', {str(tmp_path / 'sources.yaml')!r}]) == 0\n"
        "assert main(['formats']) == 0\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_missing_optional_package_breaks_only_its_format(tmp_path: Path) -> None:
    """Without scikit-image the example builds; an RTSTRUCT source gets one line naming both."""
    sources = copy_example(tmp_path)
    proc = run_cli("-q", "--sources", str(sources), "--out", str(tmp_path / "o"), block=("skimage",))
    assert proc.returncode == 0, proc.stderr
    formats = run_cli("formats", block=("skimage",))
    assert re.search(r"^dicom_rtstruct\s+\(unavailable: format 'dicom_rtstruct' needs the Python "
                     r"package 'scikit-image'", formats.stdout, re.M)
    data = yaml.safe_load(sources.read_text())
    data["sources"].append({**data["sources"][0], "name": "rt", "format": "dicom_rtstruct"})
    write_yaml(sources, data)
    proc = run_cli("--sources", str(sources), "--out", str(tmp_path / "o2"), block=("skimage",))
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.endswith("sources[2].format: format 'dicom_rtstruct' needs the Python package "
                        "'scikit-image', which is not installed (pip install scikit-image) [source 'rt']")


def test_eval_hf_without_torch_names_the_extra(tmp_path: Path) -> None:
    code = ("import sys\nsys.modules['torch'] = None\nfrom gmai_eval.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    data = tmp_path / "d.tsv"
    data.write_text("index\tquestion\tA\tB\tanswer\timage\n")
    proc = subprocess.run([sys.executable, "-c", code, "--data", str(data), "--model", "hf:/x",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "gmai-eval: error: --model hf:/x needs torch, which the 'eval' extra installs: "
        "pip install 'gmai-build[eval]' (baselines and openai: models work without it)")
    assert "Traceback" not in proc.stderr


def test_eval_baseline_works_without_torch(tmp_path: Path) -> None:
    sources = copy_example(tmp_path)
    assert run_cli("-q", "--sources", str(sources), "--out", str(tmp_path / "b")).returncode == 0
    code = ("import sys\nsys.modules['torch'] = None\nsys.modules['transformers'] = None\n"
            "from gmai_eval.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", code,
                           "--data", str(tmp_path / "b" / "GMAI-example_TEST.tsv"),
                           "--answers", str(tmp_path / "b" / "GMAI-example_TEST_answers.tsv"),
                           "--model", "random", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    n_test = len((tmp_path / "b" / "GMAI-example_TEST_answers.tsv").read_text().splitlines()) - 1
    assert re.search(rf": \d+\.\d\d% \(95% CI [\d.]+-[\d.]+, n={n_test}\)", proc.stdout), \
        proc.stdout


# The README's first command is the one CI runs ------------------------------------------------
def test_ci_runs_the_readme_first_command_verbatim() -> None:
    first = README.split("```bash", 1)[1].split("```", 1)[0].strip().splitlines()
    assert first[1] == "pip install . && gmai-build --sources examples/sources.yaml --out build/"
    ci = (REPO / ".ci" / "run").read_text()
    assert "readme_command 1" in ci and "readme_command 2" in ci


def test_label_map_example_is_a_valid_map(tmp_path: Path) -> None:
    from gmai_build.taxonomy import LabelMap, load_vocabulary

    doc = (REPO / "label_maps" / "README.md").read_text()
    path = tmp_path / "m.yaml"
    path.write_text(doc.split("```yaml", 1)[1].split("```", 1)[0])
    label_map = LabelMap(path, "s", load_vocabulary())
    assert label_map.lookup("dr").label == "diabetic retinopathy"
    assert label_map.lookup("ungradable") is None
    assert label_map.lookup("laser scars").department == "Ophthalmology"
    assert label_map.lookup("normal").department == "Ophthalmology"


def test_a_registered_converter_is_a_format() -> None:
    """Third-party code can register a converter class (entry points load through the same path)."""
    from gmai_build.converters import Converter, register
    from gmai_build.converters.base import _REGISTRY

    @register
    class Mine(Converter):
        """My layout."""

        format = "my_layout_for_test"

    try:
        assert "my_layout_for_test" in format_names()
        assert get_converter("my_layout_for_test") is Mine
    finally:
        _REGISTRY.pop("my_layout_for_test")
