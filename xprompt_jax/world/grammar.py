"""The world's lexicon and sentence grammar (lower-case words, tokens separated by spaces).

Everything here is fixed data plus small rendering helpers; randomness comes from the
`random.Random` a caller passes in, so every text is reproducible from a seed.

The lexicon has five parts, one per kind of knowledge the tasks need:

* people, objects, colours and places (stories about where things are: BoolQ-like);
* categories of things (`dog` is an `animal`, `tulip` a `flower`: RTE-like inference);
* cause -> effect pairs of events (COPA-like plausible alternatives);
* ambiguous words whose sense is set by a context word (`bank` near `river` vs near
  `money`: WiC-like);
* filler verbs and templates that vary the surface form.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

PEOPLE: Tuple[str, ...] = (
    "alice", "bob", "carol", "dave", "emma", "frank", "grace", "henry", "ivy", "jack",
    "kate", "leo", "mia", "nick", "olga", "paul")

OBJECTS: Tuple[str, ...] = (
    "ball", "book", "cup", "key", "hat", "lamp", "box", "pen", "coin", "shoe", "bag",
    "clock", "vase", "map", "ring", "spoon")

COLORS: Tuple[str, ...] = ("red", "blue", "green", "yellow", "black", "white", "brown",
                           "pink")

PLACES: Tuple[str, ...] = ("kitchen", "garden", "hall", "attic", "garage", "office",
                           "bedroom", "cellar", "library", "porch")

# category -> members (RTE-like hypernym inference). No member is also a category name.
CATEGORIES: Dict[str, Tuple[str, ...]] = {
    "animal": ("dog", "cat", "horse", "cow", "goat", "duck", "rabbit", "mouse"),
    "flower": ("rose", "tulip", "daisy", "lily", "orchid", "violet"),
    "fruit": ("apple", "pear", "plum", "peach", "grape", "lemon", "cherry", "mango"),
    "vehicle": ("car", "bus", "bike", "truck", "boat", "van", "tram", "scooter"),
    "tool": ("hammer", "saw", "drill", "wrench", "shovel", "axe"),
    "instrument": ("piano", "violin", "drum", "flute", "guitar", "harp"),
}
MEMBER_CATEGORY: Dict[str, str] = {m: c for c, ms in CATEGORIES.items() for m in ms}

# Cause -> effect pairs (COPA-like). `{p}` is a person. No event is both a cause and an
# effect, so an alternative is never plausible through a chain of two pairs.
CAUSAL_PAIRS: Tuple[Tuple[str, str], ...] = (
    ("{p} was hungry", "{p} ate some bread"),
    ("{p} dropped the glass", "the glass broke"),
    ("it rained all day", "the streets were wet"),
    ("{p} ran a long race", "{p} felt tired"),
    ("{p} forgot the umbrella", "{p} got wet in the rain"),
    ("{p} studied all night", "{p} passed the exam"),
    ("the bulb burned out", "the room went dark"),
    ("{p} felt cold", "{p} put on a coat"),
    ("{p} was thirsty", "{p} drank some water"),
    ("{p} lost the key", "{p} could not open the door"),
    ("{p} planted seeds", "plants grew in the field"),
    ("{p} heard a joke", "{p} laughed"),
    ("{p} cut an onion", "{p} cried"),
    ("the dog barked", "the baby woke up"),
    ("{p} missed the bus", "{p} was late for work"),
    ("{p} won the game", "{p} cheered"),
    ("{p} stayed in the sun", "{p} got a sunburn"),
    ("the ice melted", "the floor was wet"),
    ("{p} felt sick", "{p} went to the doctor"),
    ("{p} saved money", "{p} bought a house"),
    ("the milk was old", "the milk smelled bad"),
    ("{p} fell off the ladder", "{p} hurt a knee"),
    ("the phone rang", "{p} answered the call"),
    ("the wind was strong", "the tree fell down"),
    ("{p} painted the fence", "the fence looked new"),
    ("the oven was too hot", "the cake burned"),
    ("{p} broke a leg", "{p} used crutches"),
    ("the river flooded", "the road was closed"),
)

# Ambiguous words (WiC-like): word -> two senses, each a tuple of context words.
SENSES: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "bank": (("river", "fish", "boat", "shore", "water"),
             ("money", "loan", "cash", "account", "teller")),
    "bat": (("cave", "wings", "moth", "insects", "fur"),
            ("baseball", "swing", "player", "pitcher", "glove")),
    "bark": (("trunk", "forest", "branch", "oak", "moss"),
             ("puppy", "noise", "growl", "leash", "kennel")),
    "bow": (("arrow", "hunter", "quiver", "archer", "target"),
            ("ribbon", "gift", "wrapping", "present", "knot")),
    "crane": (("lake", "feathers", "nest", "pond", "beak"),
              ("construction", "steel", "tower", "cargo", "site")),
    "pitch": (("football", "grass", "stadium", "match", "goal"),
              ("melody", "voice", "singer", "tune", "choir")),
    "spring": (("season", "april", "blossom", "sunshine", "rain"),
               ("coil", "metal", "mattress", "bounce", "screw")),
    "letter": (("envelope", "stamp", "mailbox", "postman", "address"),
               ("alphabet", "vowel", "spelling", "capital", "word")),
    "seal": (("ocean", "ice", "flipper", "whiskers", "beach"),
             ("wax", "document", "treaty", "signature", "king")),
    "club": (("golf", "caddie", "course", "hole", "putt"),
             ("dance", "members", "disco", "music", "party")),
}

WIC_TEMPLATES: Tuple[str, ...] = (
    "{p} saw the {w} near the {c} .",
    "the {w} was close to the {c} .",
    "{p} talked about the {c} and the {w} .",
    "near the {c} , {p} noticed the {w} .",
    "{p} looked at the {w} by the {c} .",
    "there was {ac} next to the {w} .",
)

PLACE_TEMPLATES: Tuple[str, ...] = (
    "the {color} {obj} is in the {place} .",
    "{p} put the {color} {obj} in the {place} .",
    "{p} left the {obj} in the {place} .",
    "there is a {color} {obj} in the {place} .",
)
MOVE_TEMPLATES: Tuple[str, ...] = (
    "then {p} moved the {obj} to the {place} .",
    "later {p} took the {obj} to the {place} .",
)
OWN_VERBS: Tuple[str, ...] = ("has", "owns", "bought", "found")


def article(word: str) -> str:
    """'an' before a vowel, else 'a'."""
    return "an" if word[0] in "aeiou" else "a"


def with_article(word: str) -> str:
    return f"{article(word)} {word}"


def fill(template: str, **kw) -> str:
    return template.format(**kw)


def all_words() -> List[str]:
    """Every word the grammar can produce (for vocabulary checks)."""
    words = set(PEOPLE) | set(OBJECTS) | set(COLORS) | set(PLACES)
    words |= set(CATEGORIES) | set(MEMBER_CATEGORY)
    for cause, effect in CAUSAL_PAIRS:
        words |= set(cause.replace("{p}", "").split()) | set(effect.replace("{p}", "").split())
    for word, senses in SENSES.items():
        words.add(word)
        for cues in senses:
            words |= set(cues)
    for group in (WIC_TEMPLATES, PLACE_TEMPLATES, MOVE_TEMPLATES):
        for t in group:
            words |= {w for w in t.split() if not w.startswith("{")}
    words |= set(OWN_VERBS) | {"a", "an"}
    return sorted(words)
