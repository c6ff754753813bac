"""The test-side chart renderer follows Go text/template and Helm on what the chart uses;
the expected outputs are what `helm template` prints for the same templates."""

from __future__ import annotations

import pytest
from helmlite import TemplateError, merge_values, render_template


def r(src: str, **values) -> str:
    return render_template(src, {"Values": values, "Release": {"Name": "rel"}})


def test_fields_and_trim_markers():
    assert r("a: {{ .Values.x }}\n", x=1) == "a: 1\n"
    assert r("a:\n  {{- .Values.x }}\nb", x="v") == "a:v\nb"
    assert r("a {{ .Values.x -}}  \n  b", x=True) == "a trueb"
    assert r("{{ .Release.Name }}-config") == "rel-config"
    assert r("{{/* a comment */}}x") == "x"


def test_if_else_with_range():
    src = "{{- if .Values.p }}P{{- else if .Values.q }}Q{{- else }}N{{- end }}"
    assert r(src, p=True, q=True) == "P"
    assert r(src, p=False, q=1) == "Q"
    assert r(src, p=0, q="") == "N"
    assert r("{{ if not .Values.p }}off{{ end }}", p=False) == "off"
    assert r("{{ with .Values.m }}{{ .k }}{{ else }}none{{ end }}", m={"k": "v"}) == "v"
    assert r("{{ with .Values.m }}{{ .k }}{{ else }}none{{ end }}", m={}) == "none"
    assert r("{{ with .Values.missing }}x{{ end }}") == ""
    assert r("{{ range .Values.l }}[{{ . }}]{{ end }}", l=[1, "a"]) == "[1][a]"
    assert r("{{ with .Values.m }}{{ $.Release.Name }}{{ end }}", m=1) == "rel"


def test_helm_functions():
    assert r("p: {{ .Values.port | quote }}", port=9469) == 'p: "9469"'
    assert (
        r("x:\n  {{- toYaml .Values.m | nindent 2 }}", m={"b": 1, "a": [1, 2]})
        == "x:\n  a:\n  - 1\n  - 2\n  b: 1"
    )
    assert r("{{ toYaml .Values.l | indent 4 }}", l=["A"]) == "    - A"
    assert r("{{ dir .Values.p }}", p="/run/leash/leash.sock") == "/run/leash"
    assert r('{{ .Values.x | default "d" }}', x="") == "d"
    assert len(r("{{ toYaml .Values.m | sha256sum }}", m={"a": 1})) == 64


def test_stricter_than_helm_on_missing_values():
    with pytest.raises(TemplateError, match="missing value"):
        r("{{ .Values.typo }}")
    with pytest.raises(TemplateError, match="nil pointer"):
        r("{{ .Values.a.b }}")
    with pytest.raises(TemplateError, match="outside this renderer"):
        r('{{ include "x" . }}')
    with pytest.raises(TemplateError, match="missing"):
        r("{{ if .Values.x }}")


def test_values_merge_like_helm():
    base = {"a": {"b": 1, "c": 2}, "l": [1, 2], "k": "v"}
    assert merge_values(base, {"a": {"b": 9}, "l": [3], "k": None}) == {
        "a": {"b": 9, "c": 2},
        "l": [3],
    }
