"""decK's ``${{ env "DECK_NAME" }}`` templates, expanded into the parsed YAML.

decK renders a state file's text with Go's text/template before parsing it;
gatewayd renders each expression to a placeholder, parses, then puts the value
into the parsed string, so a multi-line, quote-laden service-account JSON
inside ``"..."`` arrives byte for byte and no YAML error ever prints it.
"""

from __future__ import annotations

import math
import re
import secrets as _secrets
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import yaml
from attrs import frozen

from .errors import ConfigError


def redacted(error: ConfigError, secrets: Mapping[str, str]) -> ConfigError:
    """Belt and braces: an expanded value that reached a message is put back as its template."""
    parts = [error.entity, error.field, error.message]
    for value, template in sorted(secrets.items(), key=lambda item: -len(item[0])):
        if len(value) >= 6:
            parts = [part.replace(value, template) if part else part for part in parts]
    return ConfigError(error.file, parts[2] or "", entity=parts[0], field=parts[1])


# --- decK templates and YAML ----------------------------------------------------------------
#
# decK renders each file with Go's text/template, delimiters ${{ }}, before parsing it
# (go-database-reconciler, pkg/file/template.go): env "NAME" reads NAME, which must start
# with DECK_ and be set; toBool/toInt/toFloat convert; indent N pads continuation lines;
# lines whose first non-blank character is "#" are left alone.  Here each expression
# becomes a placeholder, the YAML is parsed, and the placeholders are swapped for the
# values: a plain scalar that is exactly one expression is typed from the value as YAML
# would type it after decK's text substitution (8192 -> int, true -> bool), anything
# else is the value verbatim, whatever the quoting around it.

_EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}")
_ACTION = re.compile(r'''env\s+(?:"([^"\\]*)"|`([^`]*)`)((?:\s*\|\s*(?:toBool|toInt|toFloat|indent\s+\d+))*)''')
_PIPE = re.compile(r"\|\s*(toBool|toInt|toFloat|indent)\s*(\d+)?")
_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
             "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


@frozen
class _Expansion:
    template: str
    text: str
    block_text: str
    """The value in a block scalar (| or >), where decK's indent padding is consumed."""


def load_yaml(text: str, environ: Mapping[str, str], file: str) -> tuple[Any, dict[str, str]]:
    """Parse one state file with its ${{ env }} expressions expanded; also return the
    expanded values (value -> template) so no message can show them."""
    nonce = _secrets.token_hex(6)
    while nonce in text:
        nonce = _secrets.token_hex(6)
    marker = f"gwdeckenv{nonce}"
    expansions: dict[str, _Expansion] = {}
    rendered = _render(text, environ, file, marker, expansions)
    shown = {placeholder: expansion.template for placeholder, expansion in expansions.items()}
    loader = _Loader(rendered, {p: e.text for p, e in expansions.items()})
    try:
        node = loader.get_single_node()
        if node is not None:
            _substitute(node, marker, expansions, set())
        document = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        raise ConfigError(file, _yaml_message(error, rendered, marker, shown)) from None
    except yaml.YAMLError as error:
        raise ConfigError(file, f"invalid YAML: {_unmark(str(error), shown)}") from None
    finally:
        loader.dispose()
    values = {}
    for expansion in expansions.values():
        values[expansion.text] = values[expansion.block_text] = expansion.template
    return document, values


def _render(text: str, environ: Mapping[str, str], file: str, marker: str,
            expansions: dict[str, _Expansion]) -> str:
    out: list[str] = []
    trim_next = False
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if line.lstrip().startswith("#"):
            out.append(line)
            continue
        position = 0
        for match in _EXPRESSION.finditer(line):
            literal = line[position:match.start()]
            out.append(literal.lstrip() if trim_next else literal)
            body = match.group(1)
            if body.startswith("- "):
                _trim_tail(out)
                body = body[2:]
            trim_next = body.endswith(" -")
            if trim_next:
                body = body[:-2]
            placeholder = f"{marker}x{len(expansions)}x"
            expansions[placeholder] = _expand(body, match.group(0), environ, file, number)
            out.append(placeholder)
            position = match.end()
        rest = line[position:]
        if "${{" in rest:
            raise ConfigError(file, f"line {number}: unclosed ${{{{ (a template expression "
                                    f"ends with }}}} on the same line)")
        if trim_next and rest.strip() == "":
            out.append("")
            continue
        out.append(rest.lstrip() if trim_next else rest)
        trim_next = False
    return "".join(out)


def _trim_tail(out: list[str]) -> None:
    while out:
        out[-1] = out[-1].rstrip()
        if out[-1]:
            return
        out.pop()


def _expand(body: str, template: str, environ: Mapping[str, str], file: str,
            line: int) -> _Expansion:
    match = _ACTION.fullmatch(body.strip())
    if match is None:
        raise ConfigError(file, f"line {line}: unsupported template expression {template} "
                                f'(gatewayd expands env "DECK_NAME", optionally piped to '
                                f"toBool, toInt, toFloat or indent N)")
    name = match.group(1) if match.group(1) is not None else match.group(2)
    if not name.startswith("DECK_"):
        raise ConfigError(file, f"line {line}: environment variables in the state file must be "
                                f"prefixed with 'DECK_', found: '{name}'")
    if name not in environ:
        raise ConfigError(file, f"line {line}: environment variable '{name}' present in state "
                                f"file but not set")
    pipes = _PIPE.findall(match.group(3))
    return _Expansion(template=template,
                      text=_pipeline(environ[name], pipes, name, file, line, indent=True),
                      block_text=_pipeline(environ[name], pipes, name, file, line, indent=False))


def _pipeline(value: Any, pipes: list[tuple[str, str]], name: str, file: str, line: int,
              *, indent: bool) -> str:
    for function, argument in pipes:
        if not isinstance(value, str):
            raise ConfigError(file, f"line {line}: {function} needs a string, got {kind_of(value)}")
        try:
            if function == "toBool":
                value = _GO_BOOLS[value]
            elif function == "toInt":
                if not re.fullmatch(r"[+-]?\d+", value):
                    raise ValueError
                value = int(value)
            elif function == "toFloat":
                value = float(value)
            elif not argument:
                raise ConfigError(file, f"line {line}: indent needs a number of spaces")
            elif indent:
                value = value.replace("\n", "\n" + " " * int(argument))
        except (KeyError, ValueError):
            raise ConfigError(file, f"line {line}: the value of {name} cannot be read by "
                                    f"{function}") from None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def _go_float(value: float) -> str:
    """A float as Go's text/template prints it (%v: shortest, exponent past 1e21)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    exact = Decimal(repr(value)).normalize()
    exponent = exact.adjusted()
    if -4 <= exponent < 21:
        return format(exact, "f")
    sign, digits, _ = exact.as_tuple()
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"


class _Loader(yaml.SafeLoader):
    """SafeLoader that types a plain scalar holding one placeholder by the value it stands for."""

    def __init__(self, stream: str, exact: Mapping[str, str]) -> None:
        super().__init__(stream)
        self._exact = exact

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit and implicit[0] and value in self._exact:
            text = self._exact[value]
            if "\n" in text or "\r" in text:
                return self.DEFAULT_SCALAR_TAG
            return super().resolve(kind, text, implicit)
        return super().resolve(kind, value, implicit)


def _substitute(node: yaml.Node, marker: str, expansions: Mapping[str, _Expansion],
                seen: set[int]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        if marker in node.value:
            block = node.style in ("|", ">")
            value = re.sub(
                re.escape(marker) + r"x\d+x",
                lambda m: expansions[m.group(0)].block_text if block else expansions[m.group(0)].text,
                node.value)
            if block:
                # Chomping ran on the placeholder; decK's YAML would run it on the value.
                value = value.rstrip("\n") + ("\n" if node.value.endswith("\n") else "")
            node.value = value
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _substitute(item, marker, expansions, seen)
    elif isinstance(node, yaml.MappingNode):
        for key, item in node.value:
            _substitute(key, marker, expansions, seen)
            _substitute(item, marker, expansions, seen)


def _yaml_message(error: yaml.MarkedYAMLError, rendered: str, marker: str,
                  shown: Mapping[str, str]) -> str:
    """Where and what, without the snippet PyYAML prints (it could hold an expanded line)."""
    mark = error.problem_mark or error.context_mark
    where = ""
    if mark is not None:
        where = f"line {mark.line + 1}"
        lines = rendered.splitlines()
        line = lines[mark.line] if mark.line < len(lines) else ""
        if marker not in line[:mark.column]:
            where += f", column {mark.column + 1}"
        where += ": "
    parts = [part for part in (error.context, error.problem) if part]
    return f"invalid YAML at {where}{_unmark('; '.join(parts), shown)}"


def _unmark(message: str, shown: Mapping[str, str]) -> str:
    for placeholder, template in shown.items():
        message = message.replace(placeholder, template)
    return message


# --- applying one file ----------------------------------------------------------------------

def kind_of(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping", type(None): "null"}.get(type(value), type(value).__name__)
