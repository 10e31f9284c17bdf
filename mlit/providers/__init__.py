"""Calls to LLM providers: the one litellm call (`llm`), when to ask again (`retries`), rate
limits (`rate_limits`), prices and the budget (`pricing`) and the Batch API (`batch_api`). The judge
and translation call providers only through here.
"""
