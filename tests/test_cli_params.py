import subprocess
import sys

from test_models import TABLE_3  # the report's published counts, as literals

from vidseg.cli import main


def test_params_prints_every_model_and_all_matches(capsys):
    assert main(["params"]) == 0
    out = capsys.readouterr().out
    rows = {cells[0]: cells[1:] for cells in (
        [cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")
    )}
    for name, published in TABLE_3.items():
        assert rows[name] == [f"{published:,}", f"{published:,}", "yes"], name
    assert "19 of 19 published counts match exactly" in out
    assert "| resnet-cgru-small-deep" in out and "1,707,460" in out
    assert "| convnext-none-original" in out and "not published" in out


def test_params_unknown_name_exits_2_with_the_valid_names(capsys):
    assert main(["params", "vanilla-lstm-original"]) == 2
    err = capsys.readouterr().err
    assert "unknown model name(s) vanilla-lstm-original" in err and "vanilla-none-small-shallow" in err


def test_console_entry_point_runs_as_module():
    result = subprocess.run(
        [sys.executable, "-m", "vidseg", "params", "vanilla-crnn-small-shallow"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "222,724" in result.stdout
