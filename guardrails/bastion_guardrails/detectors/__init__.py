"""Model-free detectors: plain Python, no NeMo, each fast on a long message."""

from bastion_guardrails.detectors.base import Detector, Finding, mask, without_overlaps
from bastion_guardrails.detectors.contact import EmailDetector, PhoneDetector
from bastion_guardrails.detectors.financial import IbanDetector, PaymentCardDetector
from bastion_guardrails.detectors.injection import PromptInjectionDetector
from bastion_guardrails.detectors.national_ids import NationalIdDetector
from bastion_guardrails.detectors.profanity import ProfanityDetector
from bastion_guardrails.detectors.secrets import SecretsDetector
from bastion_guardrails.detectors.terms import TermsDetector

__all__ = [
    "Detector",
    "EmailDetector",
    "Finding",
    "IbanDetector",
    "NationalIdDetector",
    "PaymentCardDetector",
    "PhoneDetector",
    "ProfanityDetector",
    "PromptInjectionDetector",
    "SecretsDetector",
    "TermsDetector",
    "mask",
    "without_overlaps",
]
