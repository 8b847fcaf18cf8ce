"""Stage 3 of the data flow: item embeddings (text, attributes, collaborative, user vectors,
fused) that the semantic-ID tokenizer quantizes."""

from onerec.embeddings.build import EmbeddingConfig, content_source, item_embeddings
from onerec.embeddings.sparse import attribute_embeddings, cooccurrence_embeddings
from onerec.embeddings.text import TextEncoder, embed_texts, item_texts
from onerec.embeddings.vectors import check_embeddings, fuse, load_vectors

__all__ = [
    "EmbeddingConfig",
    "TextEncoder",
    "attribute_embeddings",
    "check_embeddings",
    "content_source",
    "cooccurrence_embeddings",
    "embed_texts",
    "fuse",
    "item_embeddings",
    "item_texts",
    "load_vectors",
]
