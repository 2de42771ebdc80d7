import json

import pytest

from loadtests.compare import compare_rows, format_table
from loadtests.config import RunConfig
from loadtests.prompts import Length, PromptConfig
from loadtests.records import read_records, write_records
from loadtests.report import summary_text, write_report
from loadtests.run_files import CONFIG_FILE, PLOTS, RECORDS_FILE, SUMMARY_FILE, RunInfo
from tests.loadtests.synthetic import record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_config_round_trips_through_json():
    config = RunConfig(url="http://h/v1", out="o", shape="sweep", users=8,
                       prompt=PromptConfig(mix="chat", prompt_tokens=Length(5, 9), system_prompts=2))
    assert RunConfig.from_json(config.to_json()) == config


def test_records_round_trip(tmp_path):
    records = [record(1.0), record(2.0, ok=False, error="boom")]
    write_records(tmp_path / RECORDS_FILE, records)
    assert read_records(tmp_path / RECORDS_FILE) == records


def _write_run(out, records, shape="sweep", users=4):
    config = RunConfig(url="http://h/v1", out=str(out), model="m", shape=shape, users=users, stage_s=10)
    (out / CONFIG_FILE).write_text(config.to_json())
    RunInfo(url=config.url, model="m", run_start=0.0, run_end=31.0, ignore_eos=True).write(out)
    write_records(out / RECORDS_FILE, records)


def test_report_from_synthetic_records(tmp_path):
    records = [record(float(i), users=1 if i < 10 else 2 if i < 20 else 4) for i in range(30)]
    records.append(record(5.0, tokens=4, max_tokens=16))  # ended early despite ignore_eos
    _write_run(tmp_path, records)
    summary = write_report(tmp_path)
    assert json.loads((tmp_path / SUMMARY_FILE).read_text()) == summary
    for name in PLOTS:
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC, name
    assert summary["succeeded"] == 31 and summary["completion_tokens"] == 30 * 11 + 4
    assert [s["users"] for s in summary["stages"]] == [1, 2, 4]
    assert any("1 of 31 requests ended before max_tokens" in note for note in summary["notes"])
    text = summary_text(summary)
    assert "requests 31" in text and "4 users" in text


def test_report_of_a_run_where_everything_failed(tmp_path):
    _write_run(tmp_path, [record(1.0, ok=False, error="HTTP 503: no worker")], shape="fixed", users=1)
    summary = write_report(tmp_path)
    assert summary["failed"] == 1 and summary["ttft_s"]["p50"] is None and summary["throughput_tok_s"] == 0
    assert all((tmp_path / name).exists() for name in PLOTS)
    assert "error x1: HTTP 503: no worker" in summary_text(summary)


def _summary(tok_s, latency, ttft):
    return {"tokens_per_s_per_request": {"mean": tok_s}, "latency_s": {"mean": latency}, "ttft_s": {"mean": ttft}}


def test_compare_rows_give_our_ratios_and_the_seeds():
    rows = compare_rows({"hf": _summary(20.0, 4.0, 1.0), "torch": _summary(60.0, 1.0, 0.25)})
    by_metric = {row["metric"]: row for row in rows}
    speed, latency, ttft = (by_metric[k] for k in ("tokens/s per request", "average latency", "time to first token"))
    assert speed["ratio"] == pytest.approx(3.0) and latency["ratio"] == pytest.approx(4.0) and ttft["ratio"] == 4.0
    assert speed["seed"]["ratio"] == pytest.approx(44 / 19)  # 2.32x
    assert latency["seed"]["ratio"] == pytest.approx(3.4 / 1.5) and latency["seed"]["quoted_ratio"] == 2.35
    assert ttft["seed"]["ratio"] == pytest.approx(0.8 / 0.3) and ttft["seed"]["quoted_ratio"] == 2.7
    table = format_table(rows)
    assert "torch vs hf" in table and "2.32x" in table and "2.27x (quoted 2.35x)" in table and "2.67x (quoted 2.70x)" in table
    assert "3.00x" in table and "4.00x" in table


def test_compare_with_a_missing_number_prints_a_dash():
    rows = compare_rows({"hf": _summary(None, None, None), "torch": _summary(60.0, 1.0, 0.25)})
    assert all(row["ratio"] is None for row in rows)
    assert "-" in format_table(rows).splitlines()[2]


def test_compare_file_after_the_first_backend_has_its_numbers_and_the_rest_pending(tmp_path):
    from loadtests.compare import COMPARE_FILE, TABLE_FILE, write_compare

    write_compare(tmp_path, ["hf", "torch", "null"], {"hf": _summary(20.0, 4.0, 1.0), "torch": {"error": "TimeoutError: x"}})
    written = json.loads((tmp_path / COMPARE_FILE).read_text())
    assert written["status"] == {"hf": "done", "torch": "failed", "null": "pending"}
    assert written["rows"][0]["values"] == {"hf": 20.0, "torch": None, "null": None}
    assert "20.00" in (tmp_path / TABLE_FILE).read_text()
