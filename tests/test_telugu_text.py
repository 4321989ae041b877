"""telugu_text (numbers, times, dates, money, normalize_text) and the sentence corpus it spells."""
import csv
import importlib.util
import re
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import telugu_text as tt  # noqa: E402

CORPUS = ROOT / "data" / "telugu_sentences.tsv"
MAKER = ROOT / "data" / "make_telugu_sentences.py"

NUMBERS = {
    0: "సున్నా",
    1: "ఒకటి",
    10: "పది",
    11: "పదకొండు",
    19: "పందొమ్మిది",
    20: "ఇరవై",
    21: "ఇరవై ఒకటి",
    99: "తొంభై తొమ్మిది",
    100: "వంద",
    101: "నూట ఒకటి",
    110: "నూట పది",
    150: "నూట యాభై",
    200: "రెండు వందలు",
    250: "రెండు వందల యాభై",
    999: "తొమ్మిది వందల తొంభై తొమ్మిది",
    1000: "వెయ్యి",
    1001: "వెయ్యి ఒకటి",
    1500: "వెయ్యి ఐదు వందలు",
    2000: "రెండు వేలు",
    2024: "రెండు వేల ఇరవై నాలుగు",
    10000: "పది వేలు",
    21000: "ఇరవై ఒక్క వేలు",
    100000: "లక్ష",
    150000: "లక్షా యాభై వేలు",
    250000: "రెండు లక్షల యాభై వేలు",
    10000000: "కోటి",
    15000000: "కోటీ యాభై లక్షలు",
    20000000: "రెండు కోట్లు",
    999999999: "తొంభై తొమ్మిది కోట్ల తొంభై తొమ్మిది లక్షల తొంభై తొమ్మిది వేల తొమ్మిది వందల తొంభై తొమ్మిది",
    10**10: "వెయ్యి కోట్లు",
    -5: "మైనస్ ఐదు",
    -1000: "మైనస్ వెయ్యి",
}


@pytest.mark.parametrize("n, words", NUMBERS.items())
def test_number_to_words(n, words):
    assert tt.number_to_words(n) == words


@pytest.mark.parametrize("n, words", [(1, "ఒక"), (21, "ఇరవై ఒక్క"), (101, "నూట ఒక్క"), (5, "ఐదు"),
                                      (200, "రెండు వందల"), (2000, "రెండు వేల"), (300000, "మూడు లక్షల"),
                                      (20000000, "రెండు కోట్ల"), (100, "వంద")])
def test_number_before_a_noun(n, words):
    assert tt.number_to_words(n, before_noun=True) == words


def test_number_rejects_non_integers():
    with pytest.raises(TypeError):
        tt.number_to_words(2.5)


@pytest.mark.parametrize("n, formal, colloquial", [
    (1, "మొదటి", "ఒకటో"), (2, "రెండవ", "రెండో"), (3, "మూడవ", "మూడో"), (4, "నాలుగవ", "నాలుగో"),
    (5, "ఐదవ", "ఐదో"), (8, "ఎనిమిదవ", "ఎనిమిదో"), (10, "పదవ", "పదో"), (15, "పదిహేనవ", "పదిహేనో"),
    (20, "ఇరవయ్యవ", "ఇరవయ్యో"), (21, "ఇరవై ఒకటవ", "ఇరవై ఒకటో"), (100, "వందవ", "వందో"),
    (1000, "వెయ్యవ", "వెయ్యో"),
])
def test_ordinals(n, formal, colloquial):
    assert tt.ordinal_to_words(n) == formal
    assert tt.ordinal_to_words(n, colloquial=True) == colloquial


def test_ordinal_of_zero_is_an_error():
    with pytest.raises(ValueError):
        tt.ordinal_to_words(0)


@pytest.mark.parametrize("hour, minute, words", [
    (7, 30, "ఉదయం ఏడు గంటల ముప్పై నిమిషాలు"),
    (7, 0, "ఉదయం ఏడు గంటలు"),
    (7, 1, "ఉదయం ఏడు గంటల ఒక నిమిషం"),
    (13, 0, "మధ్యాహ్నం ఒంటి గంట"),
    (13, 5, "మధ్యాహ్నం ఒంటి గంట ఐదు నిమిషాలు"),
    (12, 0, "మధ్యాహ్నం పన్నెండు గంటలు"),
    (4, 10, "తెల్లవారుజామున నాలుగు గంటల పది నిమిషాలు"),
    (18, 45, "సాయంత్రం ఆరు గంటల నలభై ఐదు నిమిషాలు"),
    (21, 21, "రాత్రి తొమ్మిది గంటల ఇరవై ఒక్క నిమిషాలు"),
    (0, 0, "రాత్రి పన్నెండు గంటలు"),
])
def test_time_to_words(hour, minute, words):
    assert tt.time_to_words(hour, minute) == words


@pytest.mark.parametrize("hour, minute, words", [
    (19, 30, "సాయంత్రం ఏడున్నర"), (13, 30, "మధ్యాహ్నం ఒంటిగంటన్నర"), (7, 15, "ఉదయం ఏడుంబావు"),
    (7, 45, "ఉదయం ఎనిమిదికి పావు తక్కువ"), (8, 0, "ఉదయం ఎనిమిది గంటలు"),
    (8, 10, "ఉదయం ఎనిమిది గంటల పది నిమిషాలు"),
])
def test_time_to_words_colloquial(hour, minute, words):
    assert tt.time_to_words(hour, minute, colloquial=True) == words


def test_time_without_part_of_day_and_bad_times():
    assert tt.time_to_words(19, 30, with_part_of_day=False) == "ఏడు గంటల ముప్పై నిమిషాలు"
    for bad in [(24, 0), (7, 60), (-1, 0)]:
        with pytest.raises(ValueError):
            tt.time_to_words(*bad)


def test_dates():
    assert tt.date_to_words(15, 8) == "ఆగస్టు పదిహేను"
    assert tt.date_to_words(26, 1, 1950) == "జనవరి ఇరవై ఆరు, వెయ్యి తొమ్మిది వందల యాభై"
    assert tt.date_to_words(15, 8, 2024, weekday=True) == "గురువారం, ఆగస్టు పదిహేను, రెండు వేల ఇరవై నాలుగు"
    assert tt.date_to_words(29, 2) == "ఫిబ్రవరి ఇరవై తొమ్మిది"
    for bad in [(30, 2, None), (29, 2, 2023), (1, 13, None), (0, 1, None)]:
        with pytest.raises(ValueError):
            tt.date_to_words(*bad)


def test_calendar_constants():
    assert len(tt.WEEKDAYS) == 7 and len(tt.MONTHS) == 12
    assert tt.WEEKDAYS[date(2024, 8, 15).weekday()] == "గురువారం"  # Monday first, like datetime
    assert tt.MONTHS[0] == "జనవరి" and tt.MONTHS[7] == "ఆగస్టు"
    assert tt.TELUGU_DIGITS == "౦౧౨౩౪౫౬౭౮౯"


@pytest.mark.parametrize("rupees, paise, words", [
    (0, 0, "సున్నా రూపాయలు"), (1, 0, "ఒక రూపాయి"), (2, 0, "రెండు రూపాయలు"), (21, 0, "ఇరవై ఒక్క రూపాయలు"),
    (100, 0, "వంద రూపాయలు"), (200, 0, "రెండు వందల రూపాయలు"), (1500, 0, "వెయ్యి ఐదు వందల రూపాయలు"),
    (100000, 0, "లక్ష రూపాయలు"), (10, 50, "పది రూపాయల యాభై పైసలు"), (1, 25, "ఒక రూపాయి ఇరవై ఐదు పైసలు"),
    (0, 50, "యాభై పైసలు"), (0, 1, "ఒక పైసా"),
])
def test_money_to_words(rupees, paise, words):
    assert tt.money_to_words(rupees, paise) == words


def test_decimals_and_digits():
    assert tt.decimal_to_words("3.14") == "మూడు పాయింట్ ఒకటి నాలుగు"
    assert tt.decimal_to_words(2.5) == "రెండు పాయింట్ ఐదు"
    assert tt.decimal_to_words("-0.05") == "మైనస్ సున్నా పాయింట్ సున్నా ఐదు"
    assert tt.decimal_to_words(7) == "ఏడు"
    assert tt.digits_to_words("9848") == "తొమ్మిది ఎనిమిది నాలుగు ఎనిమిది"
    assert tt.digits_to_words("౧౨") == "ఒకటి రెండు"
    assert tt.phone_to_words("+91 98480") == "ప్లస్ తొమ్మిది ఒకటి, తొమ్మిది ఎనిమిది నాలుగు ఎనిమిది సున్నా"
    assert tt.to_ascii_digits("౨౦౨౪ సంవత్సరం") == "2024 సంవత్సరం"


def test_with_case_ending():
    assert tt.with_case_ending("రెండు వందలు", "కి") == "రెండు వందలకి"
    assert tt.with_case_ending("ఒక నిమిషం", "కి") == "ఒక నిమిషానికి"
    assert tt.with_case_ending("పదిహేను", "న") == "పదిహేనున"


NORMALIZED = {
    "నా దగ్గర 42 పుస్తకాలు ఉన్నాయి": "నా దగ్గర నలభై రెండు పుస్తకాలు ఉన్నాయి",
    "౧౨౩ పేజీలు చదివాను": "నూట ఇరవై మూడు పేజీలు చదివాను",
    "రైలు 7:30కి వస్తుంది": "రైలు ఏడు గంటల ముప్పై నిమిషాలకి వస్తుంది",
    "సాయంత్రం 6:15 గంటలకు రండి": "సాయంత్రం ఆరు గంటల పదిహేను నిమిషాలకు రండి",
    "సా.6 గంటలకు సభ": "సాయంత్రం ఆరు గంటలకు సభ",
    "సమావేశం 14:30కు": "సమావేశం మధ్యాహ్నం రెండు గంటల ముప్పై నిమిషాలకు",
    "7:30 pm": "సాయంత్రం ఏడు గంటల ముప్పై నిమిషాలు",
    "15/08/2024న సెలవు": "ఆగస్టు పదిహేను, రెండు వేల ఇరవై నాలుగున సెలవు",
    "ధర ₹1,500": "ధర వెయ్యి ఐదు వందల రూపాయలు",
    "₹10.50 ఇవ్వండి": "పది రూపాయల యాభై పైసలు ఇవ్వండి",
    "రూ.2,50,000కి అమ్మారు": "రెండు లక్షల యాభై వేల రూపాయలకి అమ్మారు",
    "500 రూపాయలు": "ఐదు వందల రూపాయలు",
    "50% తగ్గింపు": "యాభై శాతం తగ్గింపు",
    "వడ్డీ 7.5%": "వడ్డీ ఏడు పాయింట్ ఐదు శాతం",
    "బరువు 2.75 కిలోలు": "బరువు రెండు పాయింట్ ఏడు ఐదు కిలోలు",
    "1 రోజు, 21 రోజులు": "ఒక రోజు, ఇరవై ఒక్క రోజులు",
    "200 నుంచి 500 వరకు": "రెండు వందల నుంచి ఐదు వందల వరకు",
    "10-15 రోజులు": "పది నుంచి పదిహేను రోజులు",
    "ఉష్ణోగ్రత -5 డిగ్రీలు": "ఉష్ణోగ్రత మైనస్ ఐదు డిగ్రీలు",
    "ఇక్కడికి 5 కి.మీ. దూరంలో": "ఇక్కడికి ఐదు కిలోమీటర్ల దూరంలో",
    "ఈ రోజు 40°C": "ఈ రోజు నలభై డిగ్రీల సెల్సియస్",
    "5వ తరగతి": "ఐదవ తరగతి",
    "2024లో": "రెండు వేల ఇరవై నాలుగులో",
    "నా నంబర్ 9848022338": "నా నంబర్ తొమ్మిది ఎనిమిది నాలుగు ఎనిమిది సున్నా రెండు రెండు మూడు మూడు ఎనిమిది",
    "డా. రవి గారు": "డాక్టర్ రవి గారు",
    "క్రీ.పూ. 300": "క్రీస్తు పూర్వం మూడు వందలు",
    "మొత్తం 200.": "మొత్తం రెండు వందలు.",
    "  ఏమిటి  ??  ఇది!!  ": "ఏమిటి? ఇది!",
    "అలా,ఇలా…": "అలా, ఇలా...",
}


@pytest.mark.parametrize("raw, spoken", NORMALIZED.items())
def test_normalize_text(raw, spoken):
    assert tt.normalize_text(raw) == spoken


@pytest.mark.parametrize("raw", list(NORMALIZED) + [
    "రేపు 10:45కి 3 బస్సులు, ₹ 99.99, 1,00,000 మంది, 12/12/12, 0863-2345678 ౯౯",
])
def test_normalize_text_is_idempotent_and_leaves_no_digits(raw):
    once = tt.normalize_text(raw)
    assert tt.normalize_text(once) == once
    assert not re.search(r"[0-9౦-౯]", once)


def test_cli_prints_normalised_text():
    out = subprocess.run([sys.executable, str(ROOT / "telugu_text.py"), "నా దగ్గర 42 రూపాయలు, రైలు 7:30కి"],
                         capture_output=True, text=True, encoding="utf-8", check=True).stdout
    assert out.strip() == "నా దగ్గర నలభై రెండు రూపాయలు, రైలు ఏడు గంటల ముప్పై నిమిషాలకి"


# --- the corpus --------------------------------------------------------------------------------------

REQUIRED_CATEGORIES = {
    "greetings", "family", "food", "travel", "weather", "time", "dates", "numbers", "money", "places",
    "shopping", "health", "work", "school", "questions", "answers", "requests", "small_talk",
}


@pytest.fixture(scope="module")
def corpus_rows():
    with open(CORPUS, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    assert lines[0] == "category\tsentence"
    assert lines[-1] == ""  # ends with a newline
    return [line.split("\t") for line in lines[1:-1]]


def test_corpus_shape(corpus_rows):
    assert all(len(row) == 2 for row in corpus_rows)
    sentences = [s for _, s in corpus_rows]
    assert len(set(sentences)) == len(sentences) >= 2500
    counts = Counter(c for c, _ in corpus_rows)
    assert REQUIRED_CATEGORIES <= set(counts)
    assert min(counts.values()) >= 40, counts


def test_corpus_reads_with_csv_like_synthetic_corpus(corpus_rows):
    with open(CORPUS, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert [[r["category"], r["sentence"]] for r in rows] == corpus_rows


def test_corpus_sentences_are_spoken_telugu(corpus_rows):
    lengths = []
    for _, sentence in corpus_rows:
        assert not re.search(r"[0-9A-Za-z౦-౯]", sentence), sentence
        assert re.search(r"[\u0C00-\u0C7F]", sentence), sentence
        assert sentence == sentence.strip() and "  " not in sentence
        lengths.append(len(sentence.split()))
    assert min(lengths) >= 3 and max(lengths) <= 20
    assert sum(5 <= n <= 12 for n in lengths) > len(lengths) / 2


def test_corpus_is_already_normalised(corpus_rows):
    for _, sentence in corpus_rows:
        assert tt.normalize_text(sentence) == sentence


def test_corpus_script_regenerates_the_file(tmp_path):
    out = tmp_path / "sentences.tsv"
    subprocess.run([sys.executable, str(MAKER), "--out", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == CORPUS.read_bytes()


def test_corpus_has_enough_hand_written_sentences(corpus_rows):
    spec = importlib.util.spec_from_file_location("make_telugu_sentences", MAKER)
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    handwritten = {s for sentences in maker.handwritten().values() for s in sentences}
    in_corpus = {s for _, s in corpus_rows}
    assert len(handwritten & in_corpus) >= 800
