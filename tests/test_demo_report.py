"""The demo report's sections (one object, two renderings) and the tables and findings built from results."""

import base64
from html.parser import HTMLParser

import pytest

from vidseg.demo import ModelResults, as_results
from vidseg.demo.report import (
    BulletList,
    Code,
    CodeBlock,
    Heading,
    Paragraph,
    Picture,
    Table,
    Video,
    findings,
    groups_table,
    headline_table,
    to_html,
    to_markdown,
)
from vidseg.errors import VidsegError
from vidseg.results import CorruptionFigures, EvaluationResults, Figures, PerPosition


class _Elements(HTMLParser):
    """(tag, attributes, text) of every element, text being the unescaped text directly inside it."""

    def __init__(self):
        super().__init__()
        self.elements, self._open = [], []

    def handle_starttag(self, tag, attrs):
        element = [tag, dict(attrs), ""]
        self.elements.append(element)
        if tag not in ("img", "meta"):
            self._open.append(element)

    def handle_endtag(self, tag):
        assert self._open and self._open[-1][0] == tag, f"</{tag}> closes {self._open[-1:]}"
        self._open.pop()

    def handle_data(self, data):
        if self._open:
            self._open[-1][2] += data


def _elements(page: str) -> list[tuple[str, dict, str]]:
    parser = _Elements()
    parser.feed(page)
    parser.close()
    return [(tag, attrs, text) for tag, attrs, text in parser.elements]


def test_each_section_renders_the_same_content_to_markdown_and_to_html(tmp_path):
    (tmp_path / "plot.png").write_bytes(b"png bytes")
    (tmp_path / "clip.mp4").write_bytes(b"mp4 bytes")
    sections = [
        Heading(2, "Groups & <classes>"),
        Paragraph(["Model (", Code("a<b>"), ") wins 3 > 2."]),
        BulletList(["one", "two & three"]),
        Table(["frames", "mIoU"], [["clean", "50.0"], ["rain", "–"]]),
        Picture("plot.png", "a plot"),
        Video("clip.mp4", "Video (input | output)"),
        CodeBlock("size: [32, 64]\n# a <comment>", "yaml"),
    ]
    assert to_markdown(sections) == (
        "## Groups & <classes>\n\n"
        "Model (`a<b>`) wins 3 > 2.\n\n"
        "- one\n- two & three\n\n"
        "| frames | mIoU |\n|---|---:|\n| clean | 50.0 |\n| rain | – |\n\n"
        "![a plot](plot.png)\n\n"
        "Video (input | output): [clip.mp4](clip.mp4)\n\n"
        "```yaml\nsize: [32, 64]\n# a <comment>\n```\n"
    )
    body = [element for element in _elements(to_html(sections, tmp_path)) if element[0] not in
            ("html", "head", "meta", "title", "style", "body")]
    assert [(tag, text) for tag, _, text in body] == [
        ("h2", "Groups & <classes>"),
        ("p", "Model () wins 3 > 2."), ("code", "a<b>"),
        ("ul", "\n\n\n"), ("li", "one"), ("li", "two & three"),
        ("table", "\n\n\n\n"), ("tr", ""), ("th", "frames"), ("th", "mIoU"),
        ("tr", ""), ("td", "clean"), ("td", "50.0"), ("tr", ""), ("td", "rain"), ("td", "–"),
        ("p", ""), ("img", ""),
        ("p", "Video (input | output):"), ("video", ""),
        ("pre", "\nsize: [32, 64]\n# a <comment>\n"),
    ]
    image, video = body[17][1], body[19][1]
    assert image["alt"] == "a plot"
    assert base64.b64decode(image["src"].removeprefix("data:image/png;base64,")) == b"png bytes"
    assert base64.b64decode(video["src"].removeprefix("data:video/mp4;base64,")) == b"mp4 bytes"


def test_text_that_looks_like_markup_stays_text_in_html(tmp_path):
    # The old report parsed its own Markdown: a line starting with "Video" became a player, "- " a list item.
    sections = [Paragraph(["Video games are not videos"]), Paragraph(["- not a list | nor a table"])]
    tags = [(tag, text) for tag, _, text in _elements(to_html(sections, tmp_path)) if tag in ("p", "video", "li")]
    assert tags == [("p", "Video games are not videos"), ("p", "- not a list | nor a table")]


def _figures(miou, macc=0.5, aacc=0.75, iou=None):
    return Figures(miou=miou, macc=macc, aacc=aacc, iou=iou or {"road": miou}, acc={"road": macc}, pixels=100)


def _evaluation(all_miou, clean, corrupted, types, tc, first, per_position=True):
    return EvaluationResults(
        mode="windows", protocol="dense", label_set="cityscapes", classes=["road"], frames_scored=10,
        scored=_figures(all_miou), headline={"mIoU": all_miou}, tc=tc, tc_pairs=9, mvc_8=0.9, mvc_16=None,
        mvc_runs={"8": 1}, score_at="label", all_frames=_figures(all_miou, iou={"road": all_miou, "sky": None}),
        corruption=CorruptionFigures(
            clean=_figures(clean), corrupted=_figures(corrupted), types={k: _figures(v) for k, v in types.items()}
        ),
        per_position=PerPosition(mode="labelled", frames_seen=[1, 2], miou=[first, 0.5], frames=[4, 4])
        if per_position else None,
    )


@pytest.fixture
def results():
    return {
        "per-frame": ModelResults.of(_evaluation(0.5, 0.6, 0.3, {"noise": 0.2, "blur": 0.4}, 0.8, 0.45)),
        "temporal": ModelResults.of(_evaluation(0.55, 0.59, 0.4, {"noise": 0.35}, 0.9, None)),
    }


def test_results_are_read_from_the_json_form_or_the_dataclass():
    evaluation = _evaluation(0.5, 0.6, 0.3, {"noise": 0.2}, 0.8, 0.45)
    assert as_results(evaluation) is evaluation
    assert as_results(evaluation.to_dict()) == evaluation
    from_json = ModelResults.of(evaluation.to_dict())
    assert from_json.corruption.types["noise"].miou == 0.2 and from_json.tc == 0.8 and from_json.mvc_16 is None


def test_results_without_the_demos_parts_are_an_error_naming_them():
    evaluation = _evaluation(0.5, 0.6, 0.3, {}, 0.8, 0.45, per_position=False)
    with pytest.raises(VidsegError, match="the finetune run: .* lack per_position"):
        ModelResults.of(evaluation.to_dict(), "the finetune run")


def test_tables_show_percent_and_a_dash_where_a_figure_is_missing(results):
    headline = headline_table(results)
    assert headline.rows == [
        ["per-frame", "50.0", "60.0", "30.0", "50.0", "75.0", "80.0", "90.0", "–"],
        ["temporal", "55.0", "59.0", "40.0", "50.0", "75.0", "90.0", "90.0", "–"],
    ]
    groups = {row[0]: row[1:] for row in groups_table(results).rows}
    assert list(groups) == ["all frames", "clean", "corrupted", "noise", "blur"]
    assert groups["clean"] == ["60.0", "50.0", "75.0", "59.0", "50.0", "75.0", "-1.0"]
    assert groups["noise"][-1] == "+15.0"
    assert groups["blur"] == ["40.0", "50.0", "75.0", "–", "–", "–", "–"]  # the temporal model saw no blur


def test_findings_say_where_the_temporal_model_wins_and_loses(results):
    assert findings(results) == [
        "On all held-out frames the temporal model is 5.0 mIoU points better than per-frame.",
        "On corrupted frames the temporal model is 10.0 mIoU points better than per-frame.",
        "On clean frames the temporal model is 1.0 mIoU points worse than per-frame.",
        "Temporal consistency (TC) is 10.0 points higher (90.0 vs 80.0).",
    ]  # no first-frame finding: the temporal model has no mIoU at the first position
