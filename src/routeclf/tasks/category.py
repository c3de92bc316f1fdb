"""The request's subject: the 14 MMLU-Pro categories a router picks a model by."""

from routeclf.tasks.base import Task

CATEGORY = Task(
    name="category",
    labels=(
        "biology",
        "business",
        "chemistry",
        "computer science",
        "economics",
        "engineering",
        "health",
        "history",
        "law",
        "math",
        "other",
        "philosophy",
        "physics",
        "psychology",
    ),
    fallback_label="other",
    problem_type="sequence",
    text_field="question",
    label_field="category",
    id_field="question_id",
    default_data="TIGER-Lab/MMLU-Pro",
    hub_split="test",
    source_field="src",
    mapping_file="category_mapping.json",
    mapping_keys=("category_to_idx", "idx_to_category"),
)
