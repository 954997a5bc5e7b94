"""Fixed vocabularies the simulated ATSs draw from: names, pipelines, rejection reasons."""

from __future__ import annotations


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = _words(
    "Anna Ben Chiara Dmitri Elif Farah Grace Hiroshi Ines Jonas Kemal Lena Mateo Nadia Oskar Priya"
    " Quentin Rosa Sven Tomás Uma Viktor Wen Ximena Yusuf Zoë Amélie Björn Chloé Đorđe Emma Felix"
    " Giulia Hamza Ida Jakub Kaja Luca Mia Noah"
)
LAST_NAMES = _words(
    "Müller Schmidt Novak García Okafor Kowalski Rossi Nguyen Jensen Dubois Y\u0131lmaz O'Brien Silva"
    " Ivanova Tanaka Fischer Weber Costa Lindqvist Hoffmann Kaur Moreau Horvat Bauer Petrov"
    " Andersen Łukasiewicz Meyer Popescu Smith Wagner Becker Schulz Koch Richter Klein"
)
# ASCII spellings for e-mail addresses (the schema's e-mail pattern is ASCII in practice).
ASCII_FOLD = str.maketrans(
    {
        "ü": "ue",
        "ö": "oe",
        "ä": "ae",
        "é": "e",
        "è": "e",
        "á": "a",
        "í": "i",
        "ó": "o",
        "ë": "e",
        "\u0131": "i",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ç": "c",
        "'": "",
    }
)
SOURCES = ("LinkedIn", "Company Website", "Employee Referral", "Indeed", None)
REJECTION_REASONS = (
    "Not a fit for the role",
    "Withdrew application",
    "Position filled",
    "Salary expectations too high",
    "No response from candidate",
    "Failed technical assessment",
)

# Stage pipelines by ATS habit; `HIRED_STAGE` marks where a hire lands when the pipeline has one.
HIRED_STAGE = "Hired"
PIPELINES = (
    (
        "Application Review",
        "Recruiter Screen",
        "Hiring Manager Interview",
        "Technical Interview",
        "Onsite",
        "Reference Check",
        "Offer",
    ),
    ("New", "Screening", "Interview", "Assessment", "Final Interview", "Offer", HIRED_STAGE),
    ("Applied", "Phone Screen", "Interview", "Offer"),
    (
        "Inbox",
        "CV Review",
        "Culture Call",
        "Case Study",
        "Team Interview",
        "Founder Interview",
        "Background Check",
        "Offer",
        HIRED_STAGE,
    ),
)
# What a renamed stage is called next ("Phone Screen" -> "Phone Screen (v2)" ...).
RENAME_SUFFIX = " (v{n})"
# The kind of step an ATS names in a stage's `custom_fields`, by a word of its name; else "other".
STAGE_CATEGORIES = (
    ("Interview", "interview"),
    ("Screen", "screening"),
    ("Review", "screening"),
    ("Offer", "offer"),
    (HIRED_STAGE, "hired"),
)

JOB_TITLES = (
    "Backend Engineer",
    "Frontend Engineer",
    "Data Scientist",
    "Product Manager",
    "Account Executive",
    "Customer Success Manager",
    "Recruiter",
    "DevOps Engineer",
    "UX Designer",
    "Financial Analyst",
    "Marketing Manager",
    "Support Specialist",
    "Sales Development Representative",
    "Mobile Engineer",
    "Security Engineer",
    "Office Manager",
)
SENIORITIES = ("Junior", "", "Senior", "Staff", "Lead")
DEPARTMENTS = (
    "Engineering",
    "Product",
    "Sales",
    "Customer Success",
    "People",
    "Finance",
    "Marketing",
)
CITIES = (
    ("Berlin", "DE", "Berlin"),
    ("Munich", "DE", "Bavaria"),
    ("Amsterdam", "NL", "North Holland"),
    ("London", "GB", "England"),
    ("Paris", "FR", "Île-de-France"),
    ("New York", "US", "NY"),
)
# Job status is an open enum: mostly Kombo's values, sometimes an ATS's raw string.
JOB_STATUSES = ("OPEN",) * 15 + ("CLOSED", "CLOSED", "ARCHIVED", "DRAFT", "ON_HOLD")
EMPLOYMENT_TYPES = ("FULL_TIME",) * 6 + ("PART_TIME", "CONTRACT", "INTERNSHIP", "SEASONAL")
VISIBILITIES = ("PUBLIC",) * 5 + ("INTERNAL", "UNLISTED", "CONFIDENTIAL")

# The tool half of an integration id, by scenario: cosmetic, but it reads like Kombo.
SCENARIO_TOOLS = {
    "normal": "greenhouse",
    "no-applications": "personio",
    "no-outcomes": "recruitee",
    "no-stages": "factorial",
    "setup-pending": "workday",
    "permission-missing": "lever",
    "no-jobs": "softgarden",
}
