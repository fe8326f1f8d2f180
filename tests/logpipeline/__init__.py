"""An offline evaluator for the subset of Datadog's log pipeline language that assets/logs/gunicorn.yaml uses.

Datadog runs pipelines only in its backend. This package re-implements, from Datadog's
public documentation, exactly the matchers, filters and processors that the gunicorn
pipeline uses, so that its samples and real gunicorn lines can be checked in tests.
Anything outside that subset raises an error instead of being guessed.
"""

from .grok import GrokError, GrokParser
from .pipeline import Pipeline, PipelineError

__all__ = ['GrokError', 'GrokParser', 'Pipeline', 'PipelineError']
