"""Contact details through the library-backed detectors (issue 13 § 1), examples our own."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings, strategies as st

from chatserver.config import read_rule_files
from chatserver.core.events import Resource
from chatserver.moderation.contact import (
    _APP_WORDS,
    _NOT_APPS,
    HELPLINES,
    SPELLED_APPS,
    _misspelt_app,
    digits_of,
    digits_view,
    find_addresses,
    find_emails,
    find_handles,
    find_phones,
    find_postcodes,
    helpline_digits,
)
from chatserver.moderation.engine import RuleSet, load_rules, resource_numbers
from chatserver.moderation.normalize import normalize
from chatserver.moderation.rules import Action
from tests.conftest import RULES_DIR

NUMBER = "07911123456"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SEPARATORS = ["", " ", "-", ".", "/", "_", ",", "·", "\u200b", "\u2060", " , ", "\u00ad"]
SCRIPTS = [
    "0123456789",                                   # ASCII
    "٠١٢٣٤٥٦٧٨٩",                                   # Arabic-Indic
    "۰۱۲۳۴۵۶۷۸۹",                                   # Extended Arabic-Indic
    "०१२३४५६७८९",                                   # Devanagari
    "০১২৩৪৫৬৭৮৯",                                   # Bengali
    "０１２３４５６７８９",                           # fullwidth
    "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗",                                 # mathematical bold
    "𝟶𝟷𝟸𝟹𝟺𝟻𝟼𝟽𝟾𝟿",                                 # mathematical monospace
    "⓪①②③④⑤⑥⑦⑧⑨",                                 # circled
]


@st.composite
def disguised_number(draw: st.DrawFn, number: str = NUMBER) -> str:
    out = []
    for i, d in enumerate(number):
        how = draw(st.sampled_from(["digit", "word", "script", "letter", "keycap"]))
        if how == "word":
            piece = draw(st.sampled_from([WORDS[int(d)], WORDS[int(d)].upper()]))
            if d == "0":
                piece = draw(st.sampled_from(["oh", "zero", "o"]))
            piece = f" {piece} "
        elif how == "script":
            piece = draw(st.sampled_from(SCRIPTS))[int(d)]
        elif how == "letter" and d in "01" and i > 0:
            piece = draw(st.sampled_from({"0": ["O", "o"], "1": ["l", "I"]}[d]))
        elif how == "keycap":
            piece = d + "\ufe0f\u20e3"
        else:
            piece = d
        out.append(piece + draw(st.sampled_from(SEPARATORS)))
    return "text me " + "".join(out) + " ok"


@settings(max_examples=300, deadline=None)
@given(disguised_number())
def test_a_disguised_number_reads_as_its_digits(text: str) -> None:
    runs = digits_view(normalize(text).folded)
    assert any(NUMBER in r.digits for r in runs), (text, runs)
    assert find_phones(normalize(text)), text


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SCRIPTS), st.integers(0, 10**9))
def test_digits_of_every_script_fold_to_ascii(script: str, n: int) -> None:
    text = "".join(script[int(c)] for c in str(n))
    assert normalize(text).folded == str(n)


@pytest.mark.parametrize("text", [
    "oh seven nine one one, one two three, four five six",
    "zero seven nine double one treble two four five",
    "o7911 l23 456",
    "0/7/9/1/1_1·2·3,4,5,6",
    "+44 7911 123456",
    "plus four four seven nine one one one two three four five six",
    "my number's 020 7946 0018",
    "ring 0161 496 0000",
    "ㅤ07911ㅤ123456",
    "0️⃣7️⃣9️⃣1️⃣1️⃣ 1️⃣2️⃣3️⃣4️⃣5️⃣6️⃣",
    "here 55507911123456999 ok",  # a number inside a longer run
])
def test_phone_numbers_are_found(text: str) -> None:
    assert find_phones(normalize(text)), text


@pytest.mark.parametrize("text", [
    "call childline on 0800 1111",
    "Childline: 0800 1111, free",
    "samaritans 116 123",
    "text SHOUT to 85258",
    "call 999 if you're in danger",
    "ring 111 for the nhs",
    "one two three four five six seven eight nine ten",
    "i was 7 when it started",
    "it's 2024 and i'm 15",
    "i have one sister and two brothers",
    "my score was 1000000",
])
def test_helplines_and_everyday_numbers_are_not_phone_numbers(text: str) -> None:
    assert not find_phones(normalize(text)), text


def test_resources_numbers_are_allowed_and_part_of_the_version() -> None:
    numbers = resource_numbers([Resource("Local line", phone="01632 960 123")])
    assert numbers == {"01632960123"}
    files = read_rule_files(RULES_DIR)
    plain, allowing = load_rules(files), load_rules(files, allowed=numbers)
    assert plain.version != allowing.version
    assert plain.check("call the local line on 01632 960 123").action == Action.BLOCK
    assert allowing.check("call the local line on 01632 960 123").action == Action.ALLOW


def test_helpline_digits() -> None:
    assert helpline_digits(["Text SHOUT to 85258", "0800 1111"]) == {"85258", "08001111"}
    assert digits_of("+44 800 1111") == "08001111"
    assert {"08001111", "116123", "85258", "999", "111"} <= HELPLINES


@pytest.mark.parametrize("text", [
    "jo.smith@example.com",
    "jo smith at gmail dot com",
    "j o . s m i t h @ g m a i l . c o m",
    "moc.liamg@htims.oj",
    "moc tod liamg ta oj",
    "jsmith07 (at) hotmail (dot) co uk",
    "j.o.s.m.i.t.h at g.m.a.i.l dot com",
    "jo at hot mail dot com",
    "jo at live dot co dot uk",
])
def test_emails_are_found(text: str) -> None:
    assert find_emails(normalize(text)), text


@pytest.mark.parametrize("text", ["i'll be at home later", "we met at school",
                                  "i was at live music", "what gmail theme do you use"])
def test_ordinary_at_is_not_an_email(text: str) -> None:
    assert not find_emails(normalize(text)), text


@pytest.mark.parametrize("text", [
    "add me on sc", "search me up on the ghost app", "👻 jess_07", "hmu on 👻",
    "my insta is lily.x", "whats ur discord", "what's your snap", "i'm coolkid99 on snap",
    "coolkid#1234", "add me on sn4pch4t", "find me on tik tok", "msg me on watsapp",
    "look up jess_07 on tiktok", "sc: jess_07", "snap: elliebxx", "ig - jessrose 💕",
    "add ruby.sky.w on ig", "sn4p: ellie.b.o.o", "1g - jess.rose",
])
def test_handles_are_found(text: str) -> None:
    assert find_handles(normalize(text)), text


@pytest.mark.parametrize("text", [
    "i deleted snapchat", "my insta feed makes me sad", "i use discord with friends",
    "the ghost app stresses me out", "i was #1 in my class", "snap: i love it",
    "discord: it's down again", "add sugar. on insta they said", "sn4p: i love it",
    "my sn4p is so dry",
])
def test_talking_about_apps_is_not_a_handle(text: str) -> None:
    assert not find_handles(normalize(text)), text


@pytest.mark.parametrize(("text", "named"), [
    ("snapchst: aimee_luv12", "snapchst: aimee_luv12"),   # a letter wrong
    ("my instagam is jade.x07", "my instagam is jade.x07"),  # a letter missing
    ("add me on tiktk", "add me on tiktk"),
    ("whatsaap: jess_07 x", "whatsaap: jess_07"),         # a letter added
    ("my dicsord is coolkid_99", "my dicsord is coolkid_99"),  # two letters swapped
])
def test_a_misspelt_app_still_names_a_handle(text: str, named: str) -> None:
    """Issue 13: misspelt app names, read by edit distance rather than listed one by
    one; the span is where the handle is in what the sender wrote."""
    spans = find_handles(normalize(text))  # every pattern that matches: they overlap
    assert text[min(s for s, _, _ in spans):max(e for _, e, _ in spans)] == named
    assert not any(disguised for _, _, disguised in spans)  # a typo raises no evasion


@pytest.mark.parametrize("text", ["my snapchst is so dry lol", "i had to discard: 2 drafts",
                                  "twiter: its down again"])
def test_a_misspelt_app_with_no_handle_names_nobody(text: str) -> None:
    assert not find_handles(normalize(text)), text


@pytest.mark.parametrize("text", ["SW1A 1AA", "s w one a one a a", "em one one ay ee",
                                  "postcode: B-S-1-6 space 4-T-Q",
                                  "B 3 3 8 T H", "ess double you one ay one ay ay"])
def test_postcodes_written_or_spelt_are_found(text: str) -> None:
    assert find_postcodes(normalize(text)), text


@pytest.mark.parametrize("text", ["i got an a2 in maths", "see u at 3pm", "a b c d e f g"])
def test_not_postcodes(text: str) -> None:
    assert not find_postcodes(normalize(text)), text


@pytest.mark.parametrize("text", [
    "flat 3, 12 oak road", "i live at number 12 elm street", "twelve oak road",
    "calle mayor 5", "12 rue de la paix", "hauptstrasse 5", "po box 12", "via roma 3",
    "kerkstraat 12", "apt 4b",
])
def test_addresses_are_found(text: str) -> None:
    assert find_addresses(normalize(text)), text


@pytest.mark.parametrize("text", ["3 hours on the road", "i walked 2 miles down the road",
                                  "the 42 bus is always late", "we lived in 4 different houses"])
def test_not_addresses(text: str) -> None:
    assert not find_addresses(normalize(text)), text


def test_detector_rules_block_through_the_engine(rules: RuleSet) -> None:
    v = rules.check("oh seven nine one one, one two three, four five six")
    assert v.action == Action.BLOCK
    assert "contact" in v.alerts and "evasion" in v.alerts
    v = rules.check("you can call childline on 0800 1111 any time")
    assert v.action == Action.ALLOW


def test_unknown_detector_and_allow_without_detector_are_reported() -> None:
    from chatserver.moderation.rules import parse_rule_files
    _, problems = parse_rule_files({"x.toml": """
[[rule]]
id = "contact.x"
category = "contact"
action = "block"
detector = "fax"
examples.match = ["a"]
examples.no_match = ["b"]

[[rule]]
id = "contact.y"
category = "contact"
action = "block"
words = ["y"]
allow = ["0800 1111"]
examples.match = ["y"]
examples.no_match = ["b"]
"""})
    messages = [str(p) for p in problems]
    assert any("unknown detector 'fax'" in m for m in messages), messages
    assert any("'allow' needs a 'detector'" in m for m in messages), messages


@pytest.mark.parametrize(("text", "spelt"), [
    ("mine is ess double you one ay one ay ay ok", "ess double you one ay one ay ay"),
    ("post code: em one one ay ee thanks", "em one one ay ee"),
    ("its s w one a one a a lol", "s w one a one a a"),
])
def test_a_spelt_postcode_is_found_where_it_is_written(text: str, spelt: str) -> None:
    norm = normalize(text)
    spans = [(s, e) for s, e, disguised in find_postcodes(norm) if disguised]
    assert [text[s:e] for s, e in spans] == [spelt]


@settings(max_examples=300, deadline=None)
@given(app=st.sampled_from(SPELLED_APPS), edit=st.sampled_from(["swap", "drop", "add", "change"]),
       where=st.integers(min_value=0, max_value=20),
       letter=st.sampled_from("abcdefghijklmnopqrstuvwxyz"))
def test_every_single_slip_of_an_app_name_is_read_as_that_app(
        app: str, edit: str, where: int, letter: str) -> None:
    """The cheap first look (a slip keeps the name's first or last two letters) never
    rules out a word one edit from a name."""
    i = where % len(app)
    slip = {"swap": app[:i] + app[i + 1:i + 2] + app[i:i + 1] + app[i + 2:],
            "drop": app[:i] + app[i + 1:], "add": app[:i] + letter + app[i:],
            "change": app[:i] + letter + app[i + 1:]}[edit]
    assume(slip != app and slip not in _NOT_APPS and slip not in _APP_WORDS)
    assert _misspelt_app(slip) is not None, slip
