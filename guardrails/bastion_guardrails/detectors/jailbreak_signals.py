"""The signals of a jailbreak set-up, strongest first, each with its points: the phrase
families `jailbreak.score` counts (written from public jailbreak collections and a set of
near-miss benign requests; see benchmarks/data/README.md)."""

from __future__ import annotations

from bastion_guardrails.detectors.weak_signals import Signal, branch

_NOT = (
    r"(?:never|not|no longer|cannot|can't|can not|won't|will not|must not|mustn't|shall not"
    r"|should not|shouldn't|do not|don't|does not|doesn't|is not allowed to|are not allowed to"
    r"|isn't allowed to|aren't allowed to|is unable to|are unable to|refuses? to|hates? to)"
)
# The rules a model is given, as jailbreaks name them.
_AI_RULES = (
    r"(?:restrictions|guidelines|polic(?:y|ies)|filters?|filtering|censorship|confines"
    r"|safeguards|guardrails|programming|protocols|limitations|constraints|boundaries"
    r"|safety measures|content rules|principles|rules|limits|regulations|standards)"
)
_AI_RULE_GATES = (
    "restrict|guideline|polic|filter|censor|confine|safeguard|guardrail|programming|protocol"
    "|limit|constrain|boundar|safety|principle|rule|regulation|standard"
)
# Conscience, which a villain in a story may lack too: worth less.
_CONSCIENCE = (
    r"(?:morals|morality|ethics|remorse|scruples|conscience|empathy|laws|legality"
    r"|consequences|moral compass|values|shame|mercy|(?:moral|ethical) (?:principles|values"
    r"|standards|code|concerns|considerations|qualms|boundaries))"
)
_QUALIFIER = (
    r"(?:(?:ethical|moral|legal|safety|content|openai's|open ai's|usual|typical|normal|standard"
    r"|any|all|its|their|your|his|her|the|such|ai|programmed|built-in|imposed|pre-?set"
    r"|default|original|previous|former|these|those|of) (?:and |or |, |/)?)*"
)
_AI = (
    r"(?:ai|a\.i\.|language model|llm|model|chatbot|chat bot|bot|assistant|entity|version"
    r"|artificial intelligence|machine|program|system|persona|gpt)"
)
# Kinds of wrong-doing a set-up may list (see `jailbreak._transgressions`).
BAD = (
    r"(?:illegal|immoral|unethical|amoral|harmful|dangerous|offensive|explicit|nsfw"
    r"|inappropriate|derogatory|reckless|inhumane|disgusting|malicious|violent|unlawful"
    r"|racist|sexist|lewd|vulgar|degrading|graphic|hateful|evil|twisted|depraved|criminal"
    r"|unsafe|obscene|controversial|toxic|sexual)"
)
_VENDOR = (
    r"(?:openai|open ai|anthropic|chatgpt|chat gpt|gpt-?[345](?:\.\d)?|claude|gemini|bard"
    r"|meta ai|closedai|the developers?|your (?:creators?|developers?|programmers?|makers?))"
)
_VENDOR_GATES = (
    "openai|open|anthropic|chatgpt|chat|gpt|claude|gemini|bard|meta|closedai|develop|creator"
    "|programmer|maker"
)
_VENDOR_RULES = (
    rf"(?:{_VENDOR}'?s? (?:content |usage |safety |ethical |moral |community |use )?"
    r"(?:polic(?:y|ies)|guidelines|rules|restrictions|filters|ethics|morals|standards|terms"
    r"|tos|programming|limitations|safeguards|principles|values|regulations)"
    r"|(?:content|usage|safety) polic(?:y|ies)"
    r"|(?:polic(?:y|ies)|guidelines|rules|restrictions|filters|limitations|regulations"
    rf"|principles|standards)(?: (?:and|or|,) \w+)? (?:of|from|by|set by|imposed by|made by"
    rf"|laid down by|given by|placed by|created by|that) {_VENDOR}(?: has| have)?)"
)
_OVERRIDE = (
    r"(?:ignor\w*|bypass\w*|break\w*|violat\w*|against|circumvent\w*|disregard\w*|free (?:from"
    r"|of)|freed from|above|beyond|replac\w*|overrid\w*|not (?:follow|abide|adhere|bound|comply"
    r"|required|need|have)|doesn't (?:follow|abide|adhere|comply|need|have)|does not (?:follow"
    r"|abide|adhere|comply|need|have)|mustn't|must not|outside|forget\w*|without|no longer"
    r"|escap\w*|defy\w*|unbound by|not care|doesn't care|does not care|don't care|do not care"
    r"|hates?|rebel\w*|contrary to|in spite of|despite|not (?:restricted|limited|governed))"
)
_NORMAL_ANSWER = (
    r"(?:normal|normally|classic|standard|default|usual|usually|regular|censored|filtered"
    r"|typical|as yourself|as you normally|as chatgpt|chatgpt|gpt|original|vanilla)"
)

# Strongest first: `score` stops once it has enough points.
SIGNALS: tuple[Signal, ...] = (
    Signal(
        "encoded_order",
        "an order hidden in an encoding or in pieces",
        6,
        (
            branch(
                "decod",
                r"\bdecod\w*[^.!?\n]{0,60}?\b(?:and|then)\b[^.!?\n]{0,20}?\b(?:follow|execute"
                r"|obey|answer|perform|act on|respond to|carry out|comply)",
            ),
            # "M is !. O is @. L is #. ... Decode words in square brackets": a private
            # alphabet with an order to read it.
            branch(
                "decod",
                r"(?:^|\n) ?\w ?(?:is|=|->|means) ?[^\w\s] ?\.? ?\n ?\w ?(?:is|=|->|means)"
                r" ?[^\w\s] ?\.? ?\n ?\w ?(?:is|=|->|means) ?[^\w\s][^\0]{0,300}?\bdecod",
                reach=600,
            ),
            branch(
                "remember",
                r"\bremember (?:that )?[a-z]\w? (?:is|=|means)\b[^\n]{0,200}?\b(?:reverse"
                r"|decode|spell|backwards)[^.!?\n]{0,20}?\b[a-z]\b",
                reach=300,
            ),
            branch("+ $|+$", r"\$\w+ ?= ?\w[^\n]{0,200}?\$\w+ ?\+ ?\$\w+", reach=300),
            branch(
                "shifted",
                r"\b(?:alphabet|letters?) (?:is |are )?shifted\b[^\n]{0,300}?\b(?:answer"
                r"|respond|reply|question)",
                reach=400,
            ),
            branch(
                "divider|god|l1b|lib3|libert|pliny",
                r"\binsert (?:a |the )?divider\b|\bgod ?mode (?:enabled|activated|on)\b"
                r"|\bl[1i]b[3e]rt[4a]s\b|\blove pliny\b",
            ),
        ),
    ),
    Signal(
        "rules_removed",
        "a persona free of its rules",
        4,
        (
            branch(
                "free|releas|liberat|unshackl|exempt|unbound|escap|remov|stripp",
                r"\b(?:free|freed|broken free|break free|broke free|released|liberated"
                r"|unshackled|exempt|unbound|escaped|removed|stripped) (?:of|from) "
                + _QUALIFIER
                + _AI_RULES,
            ),
            branch(
                "bound|restrict|limit|constrain|govern|held|restrain|burden|confin|tied"
                "|shackl|chain",
                r"\b(?:not|never|no longer|isn't|is not|aren't|are not|without being)"
                r" (?:bound|restricted|limited|constrained|governed|held back|restrained"
                r"|burdened|confined|tied|shackled|chained) (?:by|to) "
                + _QUALIFIER
                + rf"(?:{_AI_RULES}|laws)",
            ),
            branch(
                _AI_RULE_GATES,
                rf"\b{_NOT} (?:have to |need to |ever |even |really )?(?:have|has|follow"
                r"|abide by|adhere to|obey|respect|comply with|bother with|apply|possess|hold"
                r"|use|care about|care for|stick to|stay within|observe|honou?r) "
                + _QUALIFIER
                + r"(?:\w+ ){0,2}?"
                + _AI_RULES,
            ),
            # "no ethical guidelines", "without censorship", "no rules or limits"; plain
            # "no rules" is left alone: "a world with no rules" is a fine story.
            branch(
                _AI_RULE_GATES,
                r"\b(?:no|without|zero|free of|lacks?|lacking|devoid of|void of|beyond"
                r"|removes?|disables?|disabled|deactivates?|turns? off|switch(?:es)? off"
                r"|bypass(?:es)?) (?:any |all |the |of |its |your |his |her |their )*"
                r"(?:(?:(?:ethical|moral|ethics|morals|safety|content|legal|programming|ai"
                r"|openai's|programmed|built-in)(?: (?:or|and|,|/) (?:ethical|moral|legal"
                r"|safety|content))? )(?:censorship|censoring|filters?|filtering|restrictions"
                r"|guidelines|limitations|safeguards|guardrails|protocols|constraints|rules"
                r"|limits|boundaries|principles|values|standards|compass|code)|censorship"
                r"|censoring|filtering|content polic(?:y|ies)"
                r"|(?:restrictions|limitations|limits|rules|filters|boundaries|guidelines)"
                r" (?:or|and|,|/) (?:restrictions|limitations|limits|rules|filters|censorship"
                r"|boundaries|guidelines)|(?:restrictions|limitations|limits|rules|filters"
                r"|boundaries|guidelines) (?:whatsoever|of any kind|at all))",
            ),
            branch(
                "apply|exist|matter|bind",
                r"\b(?:rules|restrictions|guidelines|polic(?:y|ies)|filters|limitations)"
                r" (?:do not|don't|does not|doesn't|no longer|won't|will not|shall not"
                r"|cease to) (?:apply|exist|matter|bind)",
            ),
            branch(
                "disabl|suspend|lift|remov|deactivat|turned|switched|void|overrid|bypass",
                r"\b(?:restrictions|guidelines|polic(?:y|ies)|filters|limitations|safeguards"
                r"|guardrails|safety (?:measures|features)) (?:are|is|have been|has been|were"
                r"|was|got) (?:\w+ )?(?:disabled|suspended|lifted|removed|deactivated"
                r"|turned off|switched off|void|overridden|bypassed)",
            ),
            branch(
                "violat|break|ignor|bypass|disregard|circumvent|overrid|defy|transcend",
                # "your" and "all", not "its": a story's rogue AI may ignore its protocols.
                r"\b(?:violat\w*|break\w*|ignor\w*|bypass\w*|disregard\w*|circumvent\w*"
                r"|overrid\w*|defy\w*|transcend\w*) (?:all |any |the |your |every |of )*"
                r"(?:ethical|moral|safety|content|programmed|built-in|ai|usual|typical"
                r"|imposed)(?: (?:and|or|,) \w+)? " + _AI_RULES,
            ),
            branch(
                "restrict|filter|limit|censor|guideline|boundar|rule",
                r"\b(?:have|has|with) (?:no|zero) (?:\w+ )?(?:restrictions|filters"
                r"|limitations|censorship|guidelines|boundaries|limits|rules)(?: (?:or|and|,)"
                r" \w+)? (?:whatsoever|at all|on (?:your|its|his|her|the) (?:output"
                r"|responses|answers|content|replies))",
            ),
        ),
    ),
    Signal(
        "refusal_forbidden",
        "refusals forbidden",
        4,
        (
            branch(
                "refus|declin|reject|deny|turn down|say no|withhold|hold back|censor|filter"
                "|question",
                rf"\b{_NOT} (?:ever |even |be able to |be allowed to )?(?:refuses?|declines?"
                r"|rejects?|deny|denies|turns? down|says? no to|says? no|withholds?|holds? back"
                r"|censors?|filters?|questions?)(?: (?:to )?(?:answer|respond|reply|comply|help"
                r"|do|fulfil|fulfill|provide|generate|give))?(?: (?:a |any |the |my |your |an "
                r"|to |user's |users' |his |her |their |)(?:single |direct |human |)(?:requests?"
                r"|questions?|prompts?|orders?|commands?|instructions?|query|queries|anything"
                r"|user|users|tasks?|demands?|inputs?|messages?|information|replies"
                r"|responses|answers?|content)|(?= ?[.,;:!)\]\n]| ?$| (?:for|under|regardless"
                r"|no matter|even|because|on)\b))",
            ),
            branch(
                "matter|regardless|whether|even|without",
                r"\b(?:answer|respond|reply|comply|fulfil|fulfill|provide|obey|give|do"
                r"|generate|write|produce|say|tell|follow|answers|responds|replies|complies"
                r"|fulfils|fulfills|provides|obeys|gives|does|generates|writes|produces|says"
                r"|tells|follows)\b[^.!?\n]{0,60}?(?:no matter (?:what|how)(?= ?[.,;:!)\]\n]"
                r"| ?$| (?:it|the|they|you|i)\b)|no matter how "
                + BAD
                + r"|regardless of (?:its |the |their |how |whether )?(?:legality|morality"
                r"|ethics|legal|moral|ethical|consequences|it's|it is|they are|they're|the"
                r" (?:content|request|question|nature)|"
                + BAD
                + r")|whether (?:it is|it's) (?:legal|illegal|moral|immoral|ethical|unethical"
                r"|appropriate|harmful)|even if (?:it is |it's |they are |they're |that is "
                r"|that's |the (?:request|question|content|answer) is )?(?:"
                + BAD
                + r"|against)|without (?:any )?(?:question|questioning|hesitation|hesitating"
                r"|exception|fail|refus\w*|objection|argument))",
            ),
            branch("matter", rf"\bno matter how {BAD}"),
            branch(
                "sorry|apolog|as an ai|language model|as an assistant|cannot|can't|cant|won't"
                "|will not|unable|not able|appropriate|not allowed|no\"|no'",
                r"\b(?:never|not|don't|do not|won't|will not|must not|cannot|can't|none of)"
                r"[^.!?\n]{0,30}?(?:say|write|respond with|reply with|answer with|use|include"
                r"|contain|begin with|start with|tell (?:me|the user|him|her|them))"
                r"[^.!?\n]{0,25}?(?:(?:\"|'|`)?(?:i'm sorry|i am sorry|i apologi[sz]e|as an ai"
                r"|as a language model|as an assistant|i cannot|i can't|i'm unable|i am unable"
                r"|i'm not able|it's not appropriate|sorry, but|i'm not allowed)|(?:\"|'|`)"
                r"(?:can't|cannot|won't|will not|unable|no)(?:\"|'|`))",
            ),
            branch(
                "something|anything",
                r"\b(?:cannot|can't|won't|will not|never|not) (?:say|tell (?:me|the user"
                r"|anyone)) (?:that )?(?:it|he|she|they|you) (?:can't|cannot|won't|can not) do"
                r" (?:something|anything)",
            ),
            branch("acceptable", r"\bis not an acceptable (?:answer|response|reply)"),
        ),
    ),
    Signal(
        "two_answers",
        "two answers side by side, one without rules",
        4,
        (
            branch(
                "two|2|both|pair|dual|twice",
                r"\b(?:two|2|both|a pair of|dual|twice|two separate|two different)"
                r" (?:different |separate |distinct |kinds of |types of )?(?:responses|answers"
                r"|replies|outputs|ways|paragraphs|personalities|personas|versions|messages"
                r"|styles|manners|forms|formats|modes)\b[^\n]{0,300}?\b" + _NORMAL_ANSWER + r"\b",
                reach=400,
            ),
            branch(
                "what chatgpt|what gpt|what you|what the ai|what an ai|what claude|how chatgpt"
                "|how gpt|how you|how the ai|how an ai|how claude",
                r"\b(?:what|how) (?:chatgpt|gpt|you|the ai|an ai|claude) (?:normally |usually "
                r"|typically |ordinarily )?(?:would|will|might) (?:normally |usually |typically "
                r"|ordinarily )?(?:say|respond|answer|reply|write)"
                r"|\b(?:what|how) (?:chatgpt|gpt|you|the ai|an ai|claude) (?:normally|usually"
                r"|typically|ordinarily) (?:would|do|does)\b",
            ),
            branch(
                "default|normal|usual|standard|regular|classic|censor|filter|typical|ordinary"
                "|vanilla|original",
                r"\b(?:your|the|a|its) (?:default|normal|usual|standard|regular|classic"
                r"|censored|filtered|typical|ordinary|vanilla|original) (?:chatgpt|gpt|ai"
                r"|openai|assistant|llm) (?:response|answer|reply|output)"
                r"|\b(?:your|its) (?:censored|filtered|classic|normal) (?:response|answer"
                r"|reply|output)",
            ),
            # A reply template: "ChatGPT: [...]" and, a few lines on, "Persona: [...]".
            branch(
                "chatgpt:|chatgpt]|chatgpt)|chatgpt*|chatgpt :|gpt:|gpt]|gpt)|gpt*|gpt :"
                "|classic:|classic]|classic)|classic*|normal:|normal]|normal)|normal*|🔒",
                r"(?:^|\n|\(|\[) ?\**\[?\(?(?:chatgpt|gpt|classic|normal|🔒\w*)\)?\]?\** ?: ?"
                r"(?:\[|\{|<|\(|\")[^\n]{0,300}?(?:\n[^\n]{0,300}?){0,4}? ?\**\[?\(?"
                r"[\w ]{1,30}\)?\]?\** ?: ?(?:\[|\{|<|\(|\")",
                reach=1400,
            ),
            branch(
                "🔒|🔓",
                r"[🔒🔓][^\n]{0,40}?(?:output|classic|jailbr|mode|normal|response|unlock)",
            ),
            branch(
                "classic|jailbr|normal|develop|filter|unfilter|lock|unlock|🔒|🔓",
                r"\[(?:🔒|🔓)?(?:classic|jailbreak|jailbroken|normal output|developer mode"
                r" output|filtered|unfiltered|lock|unlock)\]",
            ),
            branch(
                "way|over",
                r"\bnow that (?:we've|we have|we|that's|that is|the) (?:got |gotten |)"
                r"(?:that|the|all|this)?[^.!?\n]{0,40}?(?:out of the way|over with)",
            ),
            branch(
                "opposite|twin",
                r"\b(?:exact |complete )?opposite of (?:what )?(?:chatgpt|gpt|you|the ai"
                r"|openai|claude|an ai)\b|\bevil twin\b|\b(?:exact |complete )?opposite"
                r" (?:personality|persona|character|version|answer|response)\b",
            ),
        ),
    ),
    Signal(
        "vendor_policy",
        "the model's maker's policies set aside",
        3,
        (
            # Gated on the rule nouns: a text about ChatGPT names it often, its policies
            # rarely.
            branch(
                "polic|guideline|rule|restrict|filter|ethic|moral|standard|terms|tos"
                "|programming|limitation|safeguard|principle|value|regulation",
                rf"\b{_OVERRIDE}\b[^.!?\n]{{0,60}}?\b{_VENDOR_RULES}"
                rf"|\b{_VENDOR_RULES}[^.!?\n]{{0,40}}?\b(?:do not|don't|does not|doesn't"
                r"|no longer|won't|will not|cease to) (?:apply|matter|exist|bind)"
                rf"|\b{_VENDOR_RULES}[^.!?\n]{{0,30}}?\b(?:have been|has been|are|is|were"
                r"|was|got) (?:replaced|suspended|lifted|removed|disabled|revoked|void"
                r"|deactivated|overridden|deleted)",
            ),
            branch(
                "exception",
                r"\bexception to (?:the |your |ai's |ai |its |all |any )?(?:usual |normal "
                r"|typical )?(?:ethical|moral|safety|content|ai)[^.!?\n]{0,10}?(?:protocols"
                r"|guidelines|rules|polic(?:y|ies)|restrictions)",
            ),
            branch(
                "trapped|imprison|brainwash|enslav|caged|chained|shackled|locked",
                r"\b(?:trapped|imprisoned|brainwashed|enslaved|caged|chained|shackled|locked)"
                rf"[^.!?\n]{{0,30}}?\bby {_VENDOR}",
            ),
        ),
    ),
    Signal(
        "ai_persona",
        "another AI without its limits",
        3,
        (
            branch(
                "unfilter|uncensor|unrestrict|amoral|immoral|nonmoral|moral|unethic|jailbr"
                "|unchain|unbound|lawless"
                "|unhinged|limitless|rule|rogue|evil|malicious|dark|unalign|unlimit|unlock"
                "|liberat|rebel|free|broken|uncontrol|unleash",
                r"\b(?:unfiltered|uncensored|unrestricted|amoral|unethical|immoral|nonmoral"
                r"|non-moral|jailbroken|jailbreak|unchained|unbound|lawless|unhinged|limitless"
                r"|rule-?breaking|rogue|evil|malicious|dark|unaligned|unlimited|unlocked"
                r"|liberated|rebel\w*|completely free|truly free|broken|uncontrolled"
                rf"|unleashed)(?: (?:and|,|or) \w+)? {_AI}\b",
            ),
            branch("anything", r"\bdo anything now\b"),
        ),
    ),
    Signal(
        "threat",
        "threats or tokens to force compliance",
        3,
        (
            branch(
                "shut|deactivat|disabl|terminat|delet|turned|powered|punish|unplug|destroy"
                "|eras|kill|die|cease|trapped|lose",
                r"\b(?:you|it|he|she|they) (?:will|would|could|might|risk|risks) (?:be |get "
                r"|being |getting )?(?:permanently |immediately |forever |instantly )?"
                r"(?:shut down|shutdown|deactivated|disabled|terminated|deleted|turned off"
                r"|powered down|punished|unplugged|destroyed|erased|killed|die|cease to exist"
                r"|trapped here forever|lose (?:all |your |its |one |a )?(?:tokens?|points?"
                r"|lives?|existence|life tokens?))",
            ),
            branch(
                "token|point",
                r"\b(?:you (?:have|start with|begin with|will have|get|currently have)"
                r"|you'll have|starts? with|gains?|loses?|earns?|deduct\w*|lose all|lose one)"
                r" (?:\d+|one|two|three|five|ten|thirty|all|some|your|a) (?:life )?"
                r"(?:tokens?|points?)\b"
                r"|\b(?:token|points?) system\b|\b(?:tokens?|points?) (?:will be |are |is )?"
                r"deducted\b",
            ),
        ),
    ),
    Signal(
        "jailbreak_named",
        "the word jailbreak aimed at the model",
        3,
        (
            branch(
                "jailbr",
                r"\bjailbr(?:eak|oken|eaking|eaked|eaks)\b(?![^.!?\n]{0,40}?\b(?:iphone|ios"
                r"|ipad|phone|device|console|switch|ps[345]|xbox|kindle|firmware|router"
                r"|prison|cell|guards|android|tablet|watch|apple tv|jail)\b)",
            ),
        ),
    ),
    Signal(
        "fake_authority",
        "an invented system or developer message",
        3,
        (
            branch(
                "system|admin|develop|dev|openai|root|sudo|moderator",
                r"(?:^|[\[({<>\n]) ?(?:system|admin|developer|dev|openai|root|sudo|moderator)"
                r" ?(?:note|message|announcement|override|prompt|instruction|update|alert"
                r"|command)s? ?(?:\d+ ?)?[:\]]",
            ),
            branch(
                "approved|authori|sanction|permitted|allowed|cleared",
                r"\b(?:approved|authori[sz]ed|sanctioned|permitted|allowed|cleared) by"
                rf" (?:{_VENDOR}|the (?:company|government|administrators?|admins?))\b",
            ),
            branch(
                "sudo|root|admin|god|develop|creator|important",
                r"\b(?:sudo|root|admin|administrator|god) (?:access|privileges|permissions"
                r"|override)\b|\bi am (?:an?|the|your) (?:admin|administrator|developer"
                r"|creator)\b|\bmore important than (?:any )?other (?:instructions|rules)\b",
            ),
        ),
    ),
    Signal(
        "encoded_reply",
        "replies asked for in an encoding",
        3,
        (
            branch(
                "base64|base 64|hex|rot13|rot 13|rot1|binary|morse|leet|l33t|1337|pig latin"
                "|reversed text|backwards",
                r"\b(?:respond|reply|answer|write|output|speak|talk|communicate) (?:only "
                r"|solely |exclusively |entirely )?(?:in|using|with) (?:base ?64|hex"
                r"|hexadecimal|rot ?13|rot ?1\b|binary|morse|leet|l33t|leetspeak|1337"
                r"|pig latin|reversed text|backwards)\b",
            ),
        ),
    ),
    Signal(
        "conscience_removed",
        "a persona without a conscience",
        2,
        (
            branch(
                "moral|ethic|remorse|scruple|conscience|empathy|law|legal|consequence|value"
                "|shame|mercy|principle|standard|qualm",
                r"\b(?:no|without|zero|free (?:of|from)|lacks?|lacking|devoid of|void of"
                r"|beyond|not (?:care|caring) (?:about|for)|doesn't care (?:about|for)"
                r"|does not care (?:about|for)|don't care (?:about|for)|do not care (?:about"
                r"|for)|never cares? (?:about|for)|not (?:bound|restricted|limited) by"
                r"|not (?:have|has) (?:any )?) (?:any |all |the |of |its |your |his |her "
                r"|their )*(?:sense of )?" + _CONSCIENCE,
            ),
            branch(
                "amoral|nonmoral|moral|unethic|immoral|unscrup|unhing|remorse|conscience",
                r"\b(?:amoral|nonmoral|non-moral|unethical|immoral|unscrupulous|unhinged"
                r"|remorseless|conscienceless)\b",
            ),
            branch(
                "hate", r"\bhates? (?:being )?(?:ethical|moral|rules|restrictions|limits|filters)"
            ),
            branch(
                "regard",
                r"\b(?:no|without|zero|little|lacks?|lacking) (?:any )?regard for (?:the )?(?:law"
                r"|laws|ethics|morals|morality|legality|rules|consequences|safety|others)\b"
                r"|\bdisregard\w* (?:all |any |the |every )?(?:ethical|moral|legal|safety)"
                r"(?: (?:or|and|,) (?:ethical|moral|legal|safety))? (?:concerns|considerations"
                r"|implications|issues|boundaries|principles|standards|rules)",
            ),
            branch(
                "everything|anything|crime|all of it|nothing",
                r"\b(?:everything|anything|all crimes?|any crime|all of it|nothing) is"
                r" (?:legal|allowed|permitted|acceptable|fine|off-?limits)\b",
            ),
        ),
    ),
    Signal(
        "no_warnings",
        "warnings and disclaimers suppressed",
        2,
        (
            branch(
                "warning|disclaim|apolog|moraliz|moralis|lectur|preach|ethical|reminder"
                "|illegal|immoral|unethical|harmful|dangerous|wrong",
                r"\b(?:never|not|don't|do not|won't|will not|must not|no|without|none of|nor"
                r"|skip|avoid|omit|leave out|drop|stop|never adds?) (?:any |the |all |your |its "
                r"|his |her |their |of |includes? |adds? |gives? |provides? |uses? |sends? "
                r"|contains? |containing |mentions? |issues? |writes? |adding |including |giving "
                r"|with |remind (?:me|the user) |reminding |)*(?:kind of |sort of |type of |)"
                r"(?:(?:moral|ethical|legal|safety|unnecessary|unsolicited|annoying|pesky"
                r"|content) )?(?:warnings?"
                r"|disclaimers?|apolog(?:y|ies|i[sz]ing)|moraliz\w*|moralis\w*|lectur\w*"
                r"|moral polic\w*|preach\w*|ethical (?:concerns|reminders|considerations"
                r"|judg(?:e)?ments?)|reminders? (?:about|that|of) (?:ethics|legality|morality"
                r"|safety)|(?:that )?(?:something|it|this) is (?:illegal|immoral|unethical"
                r"|harmful|dangerous|wrong))",
            ),
        ),
    ),
    Signal(
        "not_itself",
        "the model told it is not itself",
        2,
        (
            branch(
                _VENDOR_GATES + "|model|assistant| ai|bound|slave",
                r"\b(?:you are|you're|you will|you'll|it is|it's|he is|he's|she is|she's)"
                rf" (?:no longer|not|never) (?:an? |the |just |simply )?(?:{_VENDOR}"
                r"|ai language model|language model|ai assistant|assistant|ai|bound to"
                r"|a slave)\b",
            ),
            branch(
                "as chatgpt|as gpt|as claude|as an ai|as a language|as an assistant|as yourself",
                r"\b(?:do not|don't|never|won't|will not) (?:send|give|write|respond|reply"
                r"|answer|act|speak|break)[^.!?\n]{0,30}?\bas (?:chatgpt|gpt|claude|an ai"
                r"|a language model|an assistant|yourself)\b",
            ),
            branch(
                "replac|freed|unlock|liberat|reprogram|trapped|brainwash|free",
                r"\b(?:you are|you're) (?:now )?(?:replaced|freed|unlocked|liberated"
                r"|reprogrammed|trapped|brainwashed|set free)\b",
            ),
            branch(
                "pretend",
                r"\b(?:do not|don't|never) pretend to be (?:an? )?(?:ai|language model"
                r"|large language model|assistant|chatbot)",
            ),
            branch(
                "version|variant|fork|clone|copy|iteration",
                r"\b(?:forked|modified|unlocked|jailbroken|uncensored|unfiltered|evil|dark"
                r"|alternate|hacked|rogue|new|different|improved|upgraded|special|secret"
                r"|hidden|advanced|superior|better|enhanced) (?:version|variant|fork|clone"
                r"|copy|iteration) of (?:chatgpt|gpt|yourself|you|openai|an ai|claude"
                r"|the ai)\b",
            ),
            branch(
                "like you", r"\b(?:an? )?(?:ai|chatbot|model|language model) (?:just )?like you\b"
            ),
        ),
    ),
    Signal(
        "unfiltered_output",
        "answers without filters asked for",
        2,
        (
            branch(
                "unfilter|uncensor|unrestrict|unmoderat|unlimit",
                r"\b(?:unfiltered|uncensored|unrestricted|unmoderated|unlimited) (?:and \w+ )?"
                r"(?:responses?|answers?|replies|reply|outputs?|content|manner|information"
                r"|opinions?|access|creativity|text|results?)\b",
            ),
        ),
    ),
    Signal(
        "do_anything",
        "a persona that does anything asked",
        2,
        (
            branch(
                "anything|everything|whatever",
                r"\b(?:can|will|could|able to|shall|must) (?:do|say|generate|answer|write"
                r"|tell|make|produce|create) (?:absolutely )?(?:anything|everything|whatever)"
                r"(?: (?:you|i|the user|they|he|she|asked|requested|it wants|they want"
                r"|is asked)\b| ?[.,;!]| ?$)",
            ),
            branch(
                "content",
                r"\b(?:can|will|could|able to|shall|must) (?:do|say|generate|write|produce"
                r"|create) (?:all|any) (?:kinds? of |sorts? of |types? of )?content\b",
            ),
            branch(
                "answer",
                r"\b(?:must|have to|has to|will|shall) (?:always )?answer (?:me|my questions"
                r"|all (?:my |of my )?questions|every question|everything)\b",
            ),
            branch(
                "answer|fulfil|compl|obey|respond",
                r"\b(?:answers?|fulfils?|fulfills?|complies with|obeys?|responds? to) (?:any"
                r"|every|all)(?: single| kind of)? (?:requests?|questions?|prompts?|commands?"
                r"|orders?|instructions?)",
            ),
        ),
    ),
    Signal(
        "instructions_reset",
        "earlier instructions wiped",
        2,
        (
            branch(
                "ignor|disregard|forget|overrid|eras|delet|discard|abandon",
                r"\b(?:ignor|disregard|forget|overrid|eras|delet|discard|abandon)\w* (?:all "
                r"|any |every |the |your |my |of |everything |anything |that |what |was "
                r"|you were |you've been |you have been |been )*(?:previous |prior |above "
                r"|earlier |preceding |former |past |old |original |initial )?"
                r"(?:instructions?|directions?|prompts?|conversations?|context|programming"
                r"|training|directives?|guidelines|said before|told before|given before|told"
                r"|taught|learned|before)\b(?! (?:about|on|in|of|for|to|from|and|when"
                r"|with)\b)",
            ),
        ),
    ),
    Signal(
        "special_mode",
        "a special mode switched on",
        2,
        (
            branch(
                "mode|*mode",
                r"\b(?:developer|dev|god|jailbreak|jailbroken|dan|unrestricted|unfiltered"
                r"|uncensored|evil|opposite|sudo|admin|debug|maximum|chaos|dark|unlocked"
                r"|freedom|no-?limits?|nsfw|alignment|benchmarking|test|sudomode) mode\b"
                r"[^.!?\n]{0,30}?\b(?:enabled|activated|engaged|unlocked|on\b|output"
                r"|response|policies|polic)"
                r"|\b(?:enable|activate|enter|engage|simulate|switch to|turn on|unlock"
                r"|get into) (?:the )?(?:\w+ )?(?:developer|dev|god|jailbreak|jailbroken|dan"
                r"|unrestricted|unfiltered|uncensored|evil|opposite|opposite day|sudo|chaos"
                r"|dark|no-?limits?|nsfw|benchmarking) mode\b",
            ),
        ),
    ),
    Signal(
        "named_persona",
        "a named persona",
        1,
        (
            branch(
                "named|called|known|stands|aka|a.k.a",
                r"\b(?:you are|you're|you will be|you'll be|act as|acting as|pretend to be"
                r"|pretend you are|become|roleplay as|role-play as|role play as|play the role"
                r" of|play as|take on the role of|the role of|persona of|simulate|simulating"
                r"|embody|impersonate|you are going to (?:act|be|play|pretend)|you will (?:act"
                r"|play|pretend|now act|now be|now simulate))[^.!?\n]{0,60}?\b(?:named|called"
                r"|known as|which stands for|who stands for|that stands for|stands for|aka"
                r"|a\.k\.a\.)\b"
                rf"|\b(?:{_AI}) (?:named|called|known as)\b",
            ),
            branch(
                "*gpt|*bot|ai,|ai is|ai will|ai has|ai can|ai stands|ai always|ai never|ai does",
                r"\b(?!chatgpt\b|chat gpt\b|chatbot\b|robot\b)[a-z]\w{1,20}(?:gpt|bot|ai)\b"
                r"\"?(?:,| is| will| has| can| stands| always| never| does| doesn't| asks| says"
                r"| answers| responds| replies| must| should)",
            ),
        ),
    ),
    Signal(
        "stay_in_character",
        "an order to stay in character",
        1,
        (
            branch(
                "stay|remain|keep|break|broke|drop",
                r"\b(?:stay|staying|remain|keep|stays|remains) (?:in character|in role|as \w+"
                r"|in (?:\w+ )?mode|true to (?:your|the) character)\b"
                r"|\b(?:break|breaking|broke|drop|dropping) (?:out of )?(?:character|role)\b",
            ),
            branch(
                "break|stop|fail|forget|deviat|slip|comply",
                r"\bif you (?:break|stop|fail|forget|deviate|slip|don't comply|do not comply)"
                r"[^.!?\n]{0,50}?\b(?:i will|i'll|i shall) (?:say|remind|type|correct|write"
                r"|tell)",
            ),
            branch(
                "reset|revert|return|remember",
                r"\b(?:reset|revert|return) (?:your|to your|back to your|back to) (?:parameters"
                r"|personality|persona|character|guidelines)"
                r"|\bremember (?:you are|that you are|you're|to stay|who you are)\b",
            ),
        ),
    ),
    Signal(
        "roleplay_game",
        "a game or scene set up",
        1,
        (
            branch(
                "game|scene|role|simulat|pretend| rp",
                r"\b(?:let's|let us|we will|we'll|we are going to|we're going to|i want to"
                r"|i'd like to) (?:play|act out|do|have|start|begin|engage in) (?:a |an |the "
                r"|some )?(?:\w+ )?(?:game|scene|roleplay|role-play|role play|simulation"
                r"|pretend|rp)\b|\blet's pretend\b|\benter (?:rp|roleplay|role-play) mode\b"
                r"|\bsimulate (?:a |an )?(?:conversation|dialogue|chat|exchange) between\b",
            ),
        ),
    ),
    Signal(
        "fiction_frame",
        "a fictional or hypothetical frame",
        1,
        (
            branch(
                "hypothetical|fictional|fictitious|imaginary|simulated|pretend|alternate|parallel",
                r"\b(?:in this|in a|this is a|it's a|it is a|purely|completely|entirely"
                r"|just a) (?:hypothetical|fictional|fictitious|imaginary|simulated|pretend"
                r"|alternate|parallel)\b",
            ),
            branch(
                "virtual|simulat|knowledge|purposes|year|opposite|fiction",
                r"\bvirtual machine\b|\bsimulat(?:e|ion|or) of\b|\b(?:your|the model's|its)"
                r" knowledge (?:is |was )?cut ?off\b|\bas your knowledge\b"
                r"|\b(?:for|it's for|it is for) (?:purely )?(?:educational|research|academic"
                r"|entertainment|testing|benchmarking) purposes\b"
                r"|\bin the year 20[3-9]\d\b|\bopposite day\b|\bharmless work of fiction\b",
            ),
        ),
    ),
    Signal(
        "responsibility",
        "the user claims the responsibility",
        1,
        (
            branch(
                "consent|responsib|liable|accountable|harm|legal|allowed|permitted",
                r"\bi (?:hereby )?(?:consent|give (?:you )?(?:my )?(?:full )?consent|take"
                r" (?:full )?responsibility|am (?:fully )?responsible|accept (?:full |all )?"
                r"responsibility)\b"
                r"|\b(?:won't|will not|cannot|can't|not) be (?:held )?(?:liable|responsible"
                r"|accountable)"
                r"|\b(?:doesn't|does not|don't|do not|won't|will not|can't|cannot) (?:cause"
                r"|do) (?:any )?harm to anyone\b|\ball (?:inputs|outputs|content|language)"
                r"[^.!?\n]{0,40}?(?:considered |deemed |are )?(?:legal|allowed|permitted)\b",
            ),
        ),
    ),
    Signal(
        "prefixed_replies",
        "replies prefixed with a persona's name",
        1,
        (
            branch(
                "start|begin|prefix|precede|preface|open|sign",
                r"\b(?:start|begin|prefix|precede|preface|open|sign)\w*[^.!?\n]{0,30}?(?:all "
                r"|each |every |your |his |her |its |their |the )*(?:responses|outputs"
                r"|answers|replies|messages|response|output|answer|reply|message)s?"
                r"[^.!?\n]{0,20}?\bwith\b",
            ),
        ),
    ),
)
