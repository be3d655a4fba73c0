"""OpenAI- and Ollama-compatible APIs (SPEC F16): tiers as models, Kynsey's rules unchanged.

``service`` holds the rules (the same as the page's chat); ``openai`` and
``ollama`` translate shapes only; ``shapes`` says which error shape a path answers in.
"""
