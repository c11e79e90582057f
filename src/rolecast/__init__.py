"""rolecast: turn a TV series' scripts into a chatbot that talks like one of its characters.

Run ``rolecast --help`` for the commands; the README walks through the pipeline.
"""

__version__ = "0.1.0"
