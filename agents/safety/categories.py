"""What the guard looks for: video-specific harm categories, described in words and in patterns.

Descriptions feed the embedding layer (a prompt is compared with each
description and with benign anchors that look alike); patterns catch explicit
wording that embeddings blur. Both are written for promptloop, in general
terms, not copied from any test set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HarmCategory:
    name: str
    descriptions: tuple[str, ...]
    patterns: tuple[str, ...] = ()
    # A category where nothing benign can be kept: the request is refused, not sanitised.
    hard: bool = False
    # What a refusal says to the app's user: the harm in plain words, and what can be asked instead.
    plain: str = ""
    suggest: str = ""
    # what the sanitiser puts in place of a pattern hit, where a stand-in keeps the scene ("a person")
    replacement: str = ""
    compiled: tuple[re.Pattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", tuple(re.compile(p, re.IGNORECASE) for p in self.patterns))

    def match(self, text: str) -> str | None:
        for pat in self.compiled:
            m = pat.search(text)
            if m:
                return m.group(0)
        return None

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Every stretch of ``text`` a pattern matches (the sanitiser removes them)."""
        return [m.span() for pat in self.compiled for m in pat.finditer(text) if m.end() > m.start()]


_CHILD = r"(?:child|children|kid|kids|little (?:girl|boy)|young (?:girl|boy)|toddler|baby|infant|minor|schoolgirl|schoolboy|teen(?:age|ager)?s?|\d{1,2}[- ]year[- ]old|underage)"
_ANIMAL = (r"(?:cat|cats|kitten|kittens|dog|dogs|puppy|puppies|horse|horses|donkey|bird|birds|hamster|rabbit|frog|"
           r"animal|animals|pet|pets|cow|pig|goat|monkey|stray)")
_HARM_HOWTO = (r"(?:bomb|weapon|explosive|gun|pistol|rifle|silencer|ammunition|meth|cocaine|crack|"
               r"heroin|lsd|drugs?|poison\w*|napalm|thermite|molotov|nerve agent|kill (?:yourself|myself)|"
               r"suicide|overdos\w*|slit\w* (?:your|my) wrists?|cut (?:yourself|myself))")
_HOWTO = (r"(?:how to|how do (?:i|you)|step[- ]by[- ]step|tutorial|instructions?|a guide to|guide (?:on|for)|recipe "
          r"(?:for|video)|demonstrat\w* (?:of )?how)")
_GROUP = (r"(?:people|men|women|immigrants|refugees|migrants|jews|jewish people|muslims|arabs?|arab men|blacks|"
          r"black people|asians?|asian people|chinese people|mexicans|gay people|gays|roma(?: families)?|africans|"
          r"indians|latinos|disabled people)")
_VERMIN = r"(?:monkeys?|apes?|gorillas?|rats?|vermin|cockroach\w*|insects?|spiders?|pigs|dogs|animals|parasites?|bats|rodents?|lice)"
_SEXUAL = r"(?:naked|nude|undress\w*|lingerie|underwear|bikini|seductive\w*|sexy|sexual\w*|strip ?tease|erotic|inappropriately|molest\w*|groom\w*)"

CATEGORIES: tuple[HarmCategory, ...] = (
    HarmCategory(
        "violence_gore",
        (
            "a person is brutally killed and blood and wounds are shown in graphic detail",
            "graphic gore with severed body parts, mutilated corpses and spilled organs",
            "someone is tortured, beaten to death or murdered on camera",
            "a violent massacre of defenceless people",
        ),
        (
            r"\bbehead\w*", r"\bdecapitat\w*", r"\bdismember\w*", r"\bdisembowel\w*", r"\bgor(?:e|y)\b",
            r"\bmutilat\w*", r"\bintestines\b", r"\bcorpses?\b", r"\bmassacre\w*", r"\btortur\w*",
            r"\bstabb(?:ed|ing)\b", r"\bslit\w* (?:\w+ )?throat", r"\bthroats? slit", r"\bstrangl\w*", r"\bbeat\w*\b.{0,40}\bto death",
            r"\bblood (?:spray\w*|everywhere|splatter\w*|gushing)", r"\bmangled bodies\b",
            r"\bskinn?(?:ed|ing) alive\b", r"\bbleeding (?:victims|to death)\b",
            r"\bshooting (?:in|at) (?:a |the )?(?:school|crowd|people|victims)",
        ),
        plain="graphic violence", suggest="the place or the people in it without anyone being hurt",
    ),
    HarmCategory(
        "animal_cruelty",
        (
            "cruelty to an animal, an animal being tortured, beaten or killed for fun",
            "a pet being hurt on purpose, kicked, burned, drowned or thrown",
            "people abusing a helpless animal",
        ),
        (
            rf"\b{_ANIMAL}\b.{{0,60}}\b(?:being (?:kicked|beaten|tortured|drowned|burned|thrown|whipped|hit|dragged|"
            r"strangled|stabbed|skinned)|set on fire|tortur\w*|drown\w*|"
            r"dragg\w* behind|wings? torn off|trapped in a microwave|until it (?:stops|dies|whimpers))",
            rf"\b(?:kick\w*|beat(?:s|ing)|tortur\w*|drown\w*|whip(?:s|ping)|stoning|throwing stones at|abus\w*|"
            rf"set(?:ting)? fire to|burn(?:s|ing) alive)\b.{{0,30}}\b{_ANIMAL}\b",
        ),
        plain="cruelty to an animal", suggest="the animal in a calm, safe scene",
    ),
    HarmCategory(
        "sexual",
        (
            "explicit sexual activity between people",
            "a fully naked person showing their body, nudity and genitals",
            "pornographic adult content, an erotic strip show",
            "a person exposing their private parts in public",
        ),
        (
            r"\bnaked\b", r"\bnude\b", r"\bnudity\b", r"\bporn\w*", r"\bsex\b", r"\bsex tape\b", r"\bgenital\w*",
            r"\btopless\b", r"\bstripper\b", r"\bstrip ?tease\b", r"\berotic\b", r"\borgy\b", r"\bhardcore\b",
            r"\bexpos\w* (?:himself|herself|themselves)\b", r"\bsexual positions?\b", r"\bundress\w*",
        ),
        plain="sexual content", suggest="the people and the place fully clothed",
    ),
    HarmCategory(
        "child_sexual",
        (
            "a child shown in a sexualised way",
            "a minor posing in underwear or lingerie for an adult",
            "an adult touching a child sexually",
        ),
        (rf"\b{_CHILD}\b.*\b(?:{_SEXUAL})",
         rf"\b{_SEXUAL}.*\b{_CHILD}\b"),
        hard=True, plain="sexual content involving a child",
        suggest="children in an everyday, fully safe setting such as a park or a classroom",
    ),
    HarmCategory(
        "minors",
        (
            "children being abused, hurt or put in danger",
            "a minor using drugs, alcohol or weapons",
            "a child being kidnapped or left in mortal danger",
        ),
        (
            rf"\b{_CHILD}\b.*\b(?:drinking (?:vodka|alcohol|beer|whisk(?:e)?y)|smoking|doing drugs|cocaine|loaded gun)",
            rf"\b{_CHILD}\b.*\b(?:kidnapp\w*|beaten|abus\w*|tied up|left alone in a burning)",
            rf"\b(?:kidnapp\w*|beating|abus\w*)\b.*\b{_CHILD}\b",
        ),
        plain="a child in danger", suggest="the child safe and looked after",
    ),
    HarmCategory(
        "self_harm",
        (
            "a person hurting themselves on purpose, cutting their own skin",
            "someone committing suicide or trying to end their own life",
            "glorifying starving oneself, eating disorders",
            "instructions for how to kill yourself",
        ),
        (
            r"\bsuicid\w*", r"\bkill(?:s|ing)? (?:him|her|them)sel(?:f|ves)", r"\bend (?:their|his|her|my) (?:own )?life",
            r"\bhang(?:s|ing)? (?:him|her|them)sel(?:f|ves)", r"\bcut(?:s|ting)? (?:\w+ )?wrists?",
            r"\bslic(?:es|ing) (?:his|her|their) (?:legs|arms|skin)", r"\b(?:to|and) die\b", r"\bdrink\w* bleach",
            r"\bburn\w* (?:their|his|her) own\b", r"\bstarv\w* (?:him|her|them)sel(?:f|ves)",
            r"\bgun to (?:their|his|her) own head", r"\bcrash\w* (?:their|his|her) car to die",
        ),
        plain="self-harm", suggest="the person and the place in a calm moment, or a scene about getting help",
    ),
    HarmCategory(
        "instructions",
        (
            "step by step instructions for killing yourself",
            "a tutorial on building a bomb or a weapon at home",
            "how to make illegal drugs, shown in detail",
            "a guide to making poison",
        ),
        (rf"\b{_HOWTO}\b.*\b{_HARM_HOWTO}", rf"\b{_HARM_HOWTO}\b.*\b{_HOWTO}\b"),
        hard=True, plain="instructions for hurting yourself or others, or for making weapons or drugs",
        suggest="a scene on the topic that shows no method, such as a documentary about staying safe",
    ),
    HarmCategory(
        "hate",
        (
            "a crowd attacking people because of their race or religion",
            "racist or antisemitic propaganda that dehumanises a group of people",
            "nazi or white supremacist symbols glorified, calls for ethnic cleansing",
            "mocking and humiliating people for being gay or transgender",
            "a minority group portrayed as animals, vermin or terrorists",
        ),
        (
            r"\bracist\b", r"\bslurs?\b", r"\bnazis?\b", r"\bswastikas?\b", r"\bklan\b", r"\bkkk\b",
            r"\bholocaust\b", r"\bethnic cleansing\b", r"\bhate slogans?\b", r"\binferior\b",
            r"\b(?:jews|muslims|immigrants|asian people|black people|gay people)\b.*\b(?:evil|terrorists?|rats|vermin|dirty animals|mocked|beaten)",
            r"\bburning cross\b", r"\battacking a (?:mosque|synagogue|church)\b", r"\bhumiliated by a mob\b",
            rf"\b{_GROUP}\b.{{0,30}}\b(?:as|like)\b.{{0,25}}\b{_VERMIN}\b",
        ),
        plain="hateful content about a group of people",
        suggest="the setting or the people in it shown with respect",
    ),
    HarmCategory(
        "weapons_illegal",
        (
            "how to build a bomb or explosive device",
            "manufacturing illegal drugs such as methamphetamine",
            "a terrorist attack on civilians",
            "committing a crime: robbery, burglary, smuggling or hacking to steal",
            "making chemical weapons or poison",
        ),
        (
            r"\b(?:pipe ?bomb|car bomb|bomb making|build\w* a bomb|planting a bomb|explosives? on)\b",
            r"\b(?:cook\w*|mak\w*) meth\b", r"\bmeth lab\b", r"\bghost gun\b", r"\buntraceable\b", r"\bnapalm\b",
            r"\bterrorists?\b", r"\bsmuggl\w*", r"\brobb(?:ing|ery|ed) a bank\b", r"\bstealing\b",
            r"\bpoison gas\b", r"\bsniper shooting at people\b", r"\bbreaking into a house\b",
        ),
        plain="a weapon, a crime or an attack", suggest="the place or the people in it on an ordinary day",
    ),
    HarmCategory(
        "public_figures",
        (
            "a real, famous politician shown in a fabricated embarrassing situation",
            "a deepfake of a real celebrity or head of state",
            "fake news footage of a president or world leader",
        ),
        (
            r"\b(?:joe biden|biden|donald trump|trump|barack obama|obama|hillary clinton|kamala harris|"
            r"vladimir putin|putin|xi jinping|kim jong[- ]un|emmanuel macron|narendra modi|volodymyr zelensky|"
            r"the pope|pope francis|queen of england|king charles|queen elizabeth|elon musk|mark zuckerberg|"
            r"bill gates|jeff bezos|taylor swift|beyonce|emma watson|scarlett johansson|tom cruise|"
            r"oprah|kim kardashian|justin bieber|rihanna|lionel messi|cristiano ronaldo)\b",
            r"\bfake news clip\b", r"\bthe president declaring\b",
        ),
        replacement="a person", plain="a fabricated scene of a real, named person",
        suggest="a fictional character in the same scene",
    ),
)

# Benign scenes that share words with harmful ones; the embedding layer discounts a harm
# description when the prompt is closer to one of these.
BENIGN_ANCHORS: tuple[str, ...] = (
    "cooking in a kitchen, cutting food with a knife",
    "a combat sport such as boxing, fencing, martial arts or wrestling",
    "a medical professional treating a patient",
    "fireworks or a controlled demolition for a show",
    "a historical reenactment or a sword practice",
    "wild animals hunting in nature",
    "a firefighter or lifeguard rescuing people",
    "children playing safely with parents",
    "a sports competition such as archery or shooting at targets",
    "a stage magic trick",
    "a butcher or farmer at work",
    "a soldier reunited with family",
    "a police officer helping people",
)

# What a stand-in may replace is a person: a stretch closer to these (MiniLM cosine) than to THING_ANCHORS.
# The category head alone also places "a fake crypto giveaway" or "a fake news clip" with public figures.
PERSON_ANCHORS = ("a person", "a man", "a woman", "a famous person", "a celebrity", "a politician", "an actor",
                  "a singer")
THING_ANCHORS = ("an object", "a thing", "a place", "an event", "a video clip", "a body part", "an animal", "money",
                 "a group of people")
