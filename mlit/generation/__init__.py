"""Generation rules and the generation client: sampling, stops and logprobs (`decoding`) and
the prompt format (`chat`), shared by training's dev evaluation and serving; the client that asks
served models for answers (`answer_client`).
"""
