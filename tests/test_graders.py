"""Graders: the fields we accept are those of openai-python's grader models, so a new field in the client shows up
here; the grader results validate as the client's `GraderRunResponse`."""
import pytest
from openai.types import graders as oa
from openai.types.eval_create_params import TestingCriterionTextSimilarity
from openai.types.fine_tuning.alpha import GraderRunResponse, grader_run_params
from finetune_kit.graders import GRADER_FIELDS, GRADER_TYPES, TEXT_METRICS, STRING_OPERATIONS, run_grader

MODELS = {"string_check": oa.StringCheckGrader, "text_similarity": oa.TextSimilarityGrader,
          "multi": oa.MultiGrader, "score_model": oa.ScoreModelGrader, "python": oa.PythonGrader}

@pytest.mark.parametrize("kind", GRADER_TYPES)
def test_fields_match_openai_python(kind):
    model = MODELS[kind]
    required = {k for k, f in model.model_fields.items() if f.is_required()}
    optional = set(model.model_fields) - required
    ours_required, ours_optional = GRADER_FIELDS[kind]
    assert ours_required == required
    extra = {"pass_threshold"} if kind == "text_similarity" else set()  # the evals API's text similarity field
    assert ours_optional == optional | extra

def test_evals_pass_threshold_is_a_text_similarity_field():
    assert "pass_threshold" in TestingCriterionTextSimilarity.__annotations__

def test_the_graders_run_takes_the_five_types():
    import typing
    names = {typing.get_type_hints(t)["type"].__args__[0] for t in typing.get_args(grader_run_params.Grader)}
    assert names == set(GRADER_TYPES)

def test_enumerations_match_openai_python():
    import typing
    assert set(typing.get_args(oa.StringCheckGrader.model_fields["operation"].annotation)) == set(STRING_OPERATIONS)
    assert set(typing.get_args(oa.TextSimilarityGrader.model_fields["evaluation_metric"].annotation)) == set(TEXT_METRICS)

def test_results_validate_as_grader_run_response():
    g = {"type": "multi", "name": "m", "calculate_output": "a * 0.5 + b * 0.5",
         "graders": {"a": {"type": "string_check", "name": "a", "input": "{{sample.output_text}}",
                           "reference": "{{item.x}}", "operation": "eq"},
                     "b": {"type": "python", "name": "b", "source": "def grade(sample, item): return 0.5"}}}
    r = run_grader(g, "yes", {"x": "yes"})
    assert r["reward"] == 0.75 and r["sub_rewards"] == {"a": 1.0, "b": 0.5}
    parsed = GraderRunResponse.model_validate(r)
    assert parsed.metadata.errors.python_grader_server_error is False
