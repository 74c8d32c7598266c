"""Words and sentence templates of the simulated stories.

Content words come in 8 semantic categories of 4 subcategories of 8 words (256 words), so that word
identity, subcategory and category are three different things: the semantic stage of the simulated brain
responds to a continuous embedding (category + subcategory + word), the lexical stage to word identity.
Templates are filled at random, which gives several hundred distinct sentences per dataset.
Category index = position in ``CATEGORIES``; subcategory index = category * 4 + position.
"""
from __future__ import annotations

SUBCATEGORIES: dict[str, dict[str, list[str]]] = {
    "animals": {
        "pets": ["dog", "cat", "rabbit", "hamster", "parrot", "puppy", "kitten", "goldfish"],
        "farm": ["cow", "horse", "sheep", "goat", "pig", "chicken", "duck", "donkey"],
        "wild": ["tiger", "lion", "wolf", "bear", "monkey", "elephant", "snake", "fox"],
        "sea": ["whale", "shark", "dolphin", "octopus", "crab", "seal", "turtle", "jellyfish"],
    },
    "food": {
        "fruit": ["apple", "banana", "orange", "cherry", "grape", "lemon", "peach", "melon"],
        "vegetables": ["carrot", "potato", "onion", "cabbage", "pepper", "tomato", "cucumber", "pumpkin"],
        "baking": ["bread", "cake", "cookie", "muffin", "pie", "biscuit", "pancake", "waffle"],
        "meals": ["soup", "rice", "pasta", "stew", "salad", "pizza", "sandwich", "noodles"],
    },
    "places": {
        "rooms": ["kitchen", "bedroom", "bathroom", "attic", "cellar", "hallway", "garage", "porch"],
        "nature": ["forest", "river", "mountain", "meadow", "desert", "valley", "lake", "beach"],
        "city": ["street", "market", "station", "harbor", "square", "bridge", "park", "alley"],
        "buildings": ["school", "church", "hospital", "library", "castle", "museum", "prison", "factory"],
    },
    "tools": {
        "workshop": ["hammer", "drill", "wrench", "saw", "chisel", "screwdriver", "pliers", "file"],
        "garden": ["shovel", "rake", "hoe", "hose", "wheelbarrow", "shears", "bucket", "ladder"],
        "kitchenware": ["knife", "spoon", "fork", "ladle", "kettle", "whisk", "pan", "grater"],
        "sewing": ["needle", "thread", "scissors", "thimble", "button", "pin", "ribbon", "zipper"],
    },
    "emotions": {
        "joy": ["happy", "glad", "cheerful", "delighted", "joyful", "merry", "thrilled", "content"],
        "sadness": ["sad", "lonely", "gloomy", "miserable", "sorry", "tearful", "heartbroken", "glum"],
        "anger": ["angry", "furious", "annoyed", "bitter", "cross", "grumpy", "irritated", "mad"],
        "fear": ["afraid", "scared", "nervous", "anxious", "frightened", "terrified", "worried", "uneasy"],
    },
    "body": {
        "head": ["nose", "ear", "eye", "mouth", "chin", "cheek", "forehead", "tongue"],
        "limbs": ["arm", "leg", "hand", "foot", "knee", "elbow", "finger", "ankle"],
        "organs": ["heart", "lung", "liver", "stomach", "kidney", "brain", "skin", "bone"],
        "hair": ["beard", "moustache", "eyebrow", "eyelash", "curl", "braid", "ponytail", "fringe"],
    },
    "vehicles": {
        "road": ["car", "truck", "bus", "bicycle", "motorbike", "taxi", "van", "tractor"],
        "water": ["boat", "ship", "canoe", "ferry", "yacht", "raft", "submarine", "kayak"],
        "air": ["plane", "helicopter", "rocket", "balloon", "glider", "jet", "airship", "drone"],
        "rail": ["train", "tram", "subway", "locomotive", "carriage", "wagon", "trolley", "monorail"],
    },
    "clothing": {
        "tops": ["shirt", "sweater", "jacket", "coat", "blouse", "vest", "hoodie", "cardigan"],
        "footwear": ["shoe", "boot", "sandal", "slipper", "sneaker", "sock", "clog", "moccasin"],
        "headwear": ["hat", "cap", "helmet", "bonnet", "beret", "crown", "turban", "hood"],
        "accessories": ["scarf", "glove", "belt", "tie", "necklace", "bracelet", "umbrella", "wallet"],
    },
}
CATEGORIES: dict[str, list[str]] = {c: [w for ws in subs.values() for w in ws] for c, subs in SUBCATEGORIES.items()}

# {category} slots take a random word of that category; every other token is a function word
TEMPLATES = [
    "the {animals} ate the {food} in the {places}",
    "my friend was {emotions} when the {animals} took the {tools}",
    "we carried a {tools} and some {food} to the {places}",
    "in the {places} i felt {emotions} and {emotions}",
    "the {animals} and the {animals} ran to the {places}",
    "she used the {tools} to cut the {food}",
    "he was {emotions} because the {tools} was in the {places}",
    "they found a {animals} near the {places}",
    "i was {emotions} so i bought {food} and {food}",
    "the {animals} slept under the {tools}",
    "we took the {vehicles} to the {places}",
    "she hurt her {body} on the {tools}",
    "he wore a {clothing} on the {vehicles}",
    "the {animals} bit my {body} and i was {emotions}",
    "my {clothing} fell into the {food}",
    "they spotted a {vehicles} behind the {places}",
    "the old {vehicles} carried a {animals} and a {clothing}",
    "i put the {clothing} next to the {tools}",
    "her {body} felt {emotions} after the {food}",
    "we painted the {vehicles} in the {places}",
]


def word_category() -> dict[str, int]:
    """Category index of every content word (function words are absent)."""
    return {w: c for c, words in enumerate(CATEGORIES.values()) for w in words}


def word_subcategory() -> dict[str, int]:
    """Subcategory index (category * 4 + position) of every content word."""
    return {w: c * 4 + s for c, subs in enumerate(SUBCATEGORIES.values())
            for s, words in enumerate(subs.values()) for w in words}


def function_words() -> list[str]:
    """The template words that are not slots, sorted."""
    return sorted({tok for t in TEMPLATES for tok in t.split() if not tok.startswith("{")})


def vocabulary() -> list[str]:
    """Every word any template can produce, sorted (the set synthesised once per run)."""
    return sorted({w for ws in CATEGORIES.values() for w in ws} | set(function_words()))
