"""Text variants x seeds on one data set, arrays encoded once per seed (how benchmarks/README.md's
text table was measured; a rough tool: fast kernels, so one seed repeats only to within ~0.03).

    python benchmarks/text_variants.py [--data /tmp/docstrings] --seeds 0,1,2 --variants "base;ls=0.1;bs=64;ens=2"

A variant is "+"-joined key=value pairs: ModelSpec fields, lr, bs, patience, epochs, ens (members
averaged in one model), ls (label smoothing), sched (plateau|cosine), maxnorm (embedding rows),
wd (AdamW weight decay), ema (Adam's weight average, its momentum), crop (train on random
stretches of at least this share of each text), mindf (hashed n-gram ids seen in fewer training
texts read as padding), refit=1 (then a fresh model trained on train + validation for the
early-stopped number of epochs), tdrop (drop whole embedded positions during training at this
rate), edrop (dropout on the embedded sequence, element-wise), mavg=1 (average pooling over the
text's own positions, not the padding; mavg=2: their sum over the square root of their count),
wide=1 (a jointly trained linear path on n-gram frequencies beside the CNN), idf=1 (embedded rows
scaled by the ids' IDF on the training texts), lsa (embedding rows of the ids seen in training
start from LSA term vectors of the training texts, at this multiple of the random init's std;
lsamode=add: added to the random init), iddrop (each input id, a character or one of its
n-grams, read as padding at this rate in training), distill=T (knowledge distillation from the
TF-IDF + logistic regression fitted on the training texts, at temperature T; alpha weighs the
true labels' loss, default 0.5; tfold=k: the training texts' teacher targets cross-fitted over
k folds), opt=adagrad|sgd|lazyadam (with lr; lazyadam moves embedding rows only in steps
whose batch holds their id; mom for SGD's momentum, default 0.9), mixup=a (manifold
mixup: in training, each batch's pooled max + average features and one-hot labels mixed with a
shuffled copy of the batch, lambda ~ Beta(a, a) per text; plain at inference), headlr=1 (after
training, the softmax head replaced by scikit-learn logistic regression on the standardized pooled
features, C chosen on the validation texts, then refitted on train + validation; the CNN's own
score is kept as cnn_acc), frozen=1 (the embedding table is not trained: each id keeps its random
init, so positions are a fixed random projection of their ids), zerounseen=1 (after training, the
embedding rows of ids no training text holds, which never had a gradient, set to zero; the score
before is kept as acc_before_zeroing), trace=1 (test accuracy and validation loss after every
epoch, kept as test_curve and val_loss_curve). tdrop/edrop/mavg/wide/idf build the factorized
model with max + average pooling whatever `head` says. Window sizes take "," inside a value,
e.g. window_sizes=1,3,4,5. `--pre` passes preprocessor parameters, e.g. '{"hash_buckets": 131072}'.
Each result, and TF-IDF + logistic regression on the same split, is appended to --out as JSON lines
(`--tfidf-parts`: also its word and character parts alone, and both fitted without the
validation texts; `--variants ""` runs no CNN).
"""
import argparse, json, os, sys, time, pickle
from pathlib import Path
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np

from pipelines.config import resolve_config
from pipelines.datasets import load_source
from pipelines.defaults import build_preprocessor
from pipelines.modality import Modality
from pipelines.training import make_splits

p = argparse.ArgumentParser()
p.add_argument("--data", default=None)
p.add_argument("--seeds", default="0,1,2")
p.add_argument("--variants", default="base")
p.add_argument("--out", default="/tmp/sweep.jsonl")
p.add_argument("--test-split", type=float, default=0.2)
p.add_argument("--positions", type=int, default=None)
p.add_argument("--pre", default="{}")
p.add_argument("--tfidf-parts", action="store_true", help="also score TF-IDF's word and character parts alone, and both without the validation texts")
args = p.parse_args()
name = "builtin" if args.data is None else os.path.basename(args.data.rstrip("/"))


def encode(seed):
    cache = f"/tmp/sweep-cache-{name}-{seed}-{args.test_split}-{args.positions}-{args.pre}.pkl"
    if os.path.exists(cache):
        return pickle.load(open(cache, "rb"))
    pre_params = json.loads(args.pre)
    if args.positions: pre_params["positions"] = args.positions
    config = resolve_config("text", data=args.data, preprocess=pre_params, train={"seed": seed, "test_split": args.test_split})
    source = load_source(args.data, Modality.text)
    splits = make_splits(source, config)
    pre, _ = build_preprocessor(Modality.text, config.preprocess, splits["train"])
    texts = {k: [pre.read_text(x) for x in v.inputs] for k, v in splits.items()}
    pre.fit(texts["train"])
    classes = sorted(set(splits["train"].labels))
    idx = {c: i for i, c in enumerate(classes)}
    arr = {k: (pre.transform(texts[k]), np.array([idx[l] for l in splits[k].labels], np.int32), texts[k]) for k in splits}
    out = (arr, pre.num_ids, len(classes), pre.get_config())
    pickle.dump(out, open(cache, "wb"))
    return out


def tfidf(arr, parts=("word", "char"), splits=("train", "validation")):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union
    vectorizers = {
        "word": TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        "char": TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    }
    model = make_pipeline(make_union(*(vectorizers[part] for part in parts)), LogisticRegression(C=10.0, max_iter=2000))
    model.fit(sum((arr[k][2] for k in splits), []), np.concatenate([arr[k][1] for k in splits]))
    return float(np.mean(model.predict(arr["test"][2]) == arr["test"][1]))


def parse(variant):
    opts = {}
    for part in variant.split("+"):
        if part == "base":
            continue
        k, _, v = part.partition("=")
        opts[k] = v
    return opts


def max_average_windows(x, spec):
    """The default text model's windows over embedded positions: for each width, Conv1D + ReLU,
    then max and average pooling over positions, all concatenated."""
    import keras

    pooled = []
    for width in spec.window_sizes:
        y = keras.layers.ReLU()(keras.layers.Conv1D(spec.filters[0], width)(x))
        pooled += [keras.layers.GlobalMaxPooling1D()(y), keras.layers.GlobalAveragePooling1D()(y)]
    return keras.layers.Concatenate()(pooled)


def document_frequency(x, size):
    """How many texts (rows of `x`) hold each id, for ids below `size`."""
    df = np.zeros(size, np.int64)
    for row in x:
        df[np.unique(row)] += 1
    return df


def build_variant_model(shape, num_ids, num_classes, spec, token_rate=0.0, element_rate=0.0, masked_average=0):
    """build_text_model's factorized form with extras: dropout on the embedded sequence (whole
    positions, token_rate, and/or single values, element_rate; training only), and an average
    over the text's own positions instead of all positions, padding included (masked_average)."""
    import keras
    from keras import ops
    from models.layers import TokenEmbedding
    from models.votes import add_votes

    ids = keras.Input(shape=shape, dtype="int32")
    x = TokenEmbedding(num_ids, spec.embedding_dim, name="embedding")(ids)
    if token_rate:
        x = keras.layers.Dropout(token_rate, noise_shape=(None, shape[0], 1))(x)
    if element_rate:
        x = keras.layers.Dropout(element_rate)(x)
    first = ids[..., 0] if len(shape) == 2 else ids
    valid = keras.layers.Lambda(lambda t: ops.cast(ops.not_equal(t, 0), "float32"))(first)
    branches = []
    for width in spec.window_sizes:
        y = keras.layers.ReLU()(keras.layers.Conv1D(spec.filters[0], width)(x))
        pooled = [keras.layers.GlobalMaxPooling1D()(y)]
        if masked_average:
            def mean(args, width=width):
                y, valid = args
                m = ops.expand_dims(valid[:, : ops.shape(y)[1]], -1)  # windows that start in the text
                count = ops.maximum(ops.sum(m, axis=1), 1.0)
                return ops.sum(y * m, axis=1) / (count if masked_average == 1 else ops.sqrt(count))
            pooled.append(keras.layers.Lambda(mean)([y, valid]))
        else:
            pooled.append(keras.layers.GlobalAveragePooling1D()(y))
        branches.append(keras.layers.Concatenate()(pooled))
    x = branches[0] if len(branches) == 1 else keras.layers.Concatenate()(branches)
    return keras.Model(ids, add_votes(x, num_classes, spec))


def drop_rare_ngrams(splits, min_df):
    """Set the n-gram columns' ids seen in fewer than min_df training texts (splits[0]) to 0,
    the padding id, whose embedding is the zero vector: TF-IDF's min_df for hashed n-grams."""
    train = splits[0]
    if train.ndim != 3:
        return splits
    keep = document_frequency(train[:, :, 1:], int(max(s.max() for s in splits)) + 1) >= min_df
    out = []
    for x in splits:
        x = x.copy()
        grams = x[:, :, 1:]
        grams[~keep[grams]] = 0
        out.append(x)
    return tuple(out)


def build_wide_model(shape, num_ids, num_classes, spec):
    """The default factorized CNN (max + average pooling) plus a linear path: a width-1 full
    window with one filter per class (a row per id), averaged over the text's own positions, whose
    scores are added to the CNN's before the softmax ("wide and deep": logistic regression on
    n-gram frequencies, trained jointly)."""
    import keras
    from keras import ops
    from models.layers import TokenEmbedding

    ids = keras.Input(shape=shape, dtype="int32")
    x = TokenEmbedding(num_ids, spec.embedding_dim, name="embedding")(ids)
    deep = keras.layers.Dropout(spec.dropout)(max_average_windows(x, spec))
    deep = keras.layers.Dense(num_classes)(deep)
    rows = TokenEmbedding(num_ids, num_classes, name="wide")(ids)  # (batch, positions, classes)
    first = ids[..., 0] if len(shape) == 2 else ids

    def mean(args):
        rows, first = args
        valid = ops.expand_dims(ops.cast(ops.not_equal(first, 0), rows.dtype), -1)
        return ops.sum(rows, axis=1) / ops.maximum(ops.sum(valid, axis=1), 1.0)

    wide = keras.layers.Lambda(mean)([rows, first])
    out = keras.layers.Activation("softmax", dtype="float32")(keras.layers.Add()([deep, wide]))
    return keras.Model(ids, out)


def build_idf_model(shape, num_ids, num_classes, spec, weights):
    """The default factorized CNN (max + average pooling) whose embedded rows are scaled by fixed
    per-id weights (IDF from the training texts) before a position's ids are summed."""
    import keras
    from keras import ops
    from models.votes import add_votes

    class WeightedEmbedding(keras.layers.Layer):
        def build(self, input_shape):
            self.embeddings = self.add_weight(shape=(num_ids, spec.embedding_dim),
                                              initializer=keras.initializers.RandomUniform(-0.05, 0.05))
            self.scale = self.add_weight(shape=(num_ids,), trainable=False,
                                         initializer=keras.initializers.Constant(weights.astype("float32")))

        def call(self, ids):
            rows = ops.take(self.embeddings, ids, axis=0) * ops.expand_dims(ops.take(self.scale, ids, axis=0), -1)
            return ops.sum(rows, axis=2)

    ids = keras.Input(shape=shape, dtype="int32")
    x = WeightedEmbedding()(ids)
    return keras.Model(ids, add_votes(max_average_windows(x, spec), num_classes, spec))


def idf_weights(x, num_ids):
    """log((1 + texts) / (1 + texts holding the id)) + 1 per id, padding 0, from training ids."""
    weights = np.log((1 + len(x)) / (1 + document_frequency(x, num_ids))) + 1
    weights[0] = 0
    return weights


def random_crops(x, y, batch_size, keep, seed):
    """Batches of training texts, each cut to a random stretch of at least `keep` of its own
    length and moved to the first position (fresh cuts every epoch)."""
    import keras

    class Crops(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            first = x[..., 0] if x.ndim == 3 else x
            self.lengths = np.maximum((first != 0).sum(1), 1)
            self.order = self.rng.permutation(len(x))

        def __len__(self):
            return int(np.ceil(len(x) / batch_size))

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(x))

        def __getitem__(self, index):
            rows = self.order[index * batch_size:(index + 1) * batch_size]
            out = np.zeros((len(rows),) + x.shape[1:], x.dtype)
            for i, row in enumerate(rows):
                n = int(self.lengths[row])
                size = int(self.rng.integers(max(1, int(np.ceil(keep * n))), n + 1))
                start = int(self.rng.integers(0, n - size + 1))
                out[i, :size] = x[row, start:start + size]
            return out, y[rows]

    return Crops()


def lsa_rows(x, num_ids, dim, seed, scale):
    """Rows for the ids seen in training: LSA term vectors (V * S of a truncated SVD of the
    sublinear TF-IDF text x id matrix), scaled to the random init's std times `scale`."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.decomposition import TruncatedSVD
    rows, cols = [], []
    for i, t in enumerate(x):
        ids = t.ravel(); ids = ids[ids != 0]
        rows.append(np.full(len(ids), i)); cols.append(ids)
    m = sp.csr_matrix((np.ones(sum(map(len, cols)), np.float32), (np.concatenate(rows), np.concatenate(cols))), shape=(len(x), num_ids))
    m.sum_duplicates()
    m = TfidfTransformer(sublinear_tf=True).fit_transform(m)
    svd = TruncatedSVD(dim, random_state=seed).fit(m)
    v = (svd.components_.T * svd.singular_values_).astype(np.float32)
    seen = np.asarray((m != 0).sum(0)).ravel() > 0
    seen[0] = False
    v = v[seen]
    v *= scale * (0.1 / np.sqrt(12)) / v.std()
    return seen, v


def with_id_dropout(base, shape, rate, seed):
    """iddrop: each input id (a character or one of its hashed n-grams) independently replaced
    by the padding id 0 with probability `rate`, during training only; then the given model."""
    import keras
    from keras import ops

    class IdDropout(keras.layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.gen = keras.random.SeedGenerator(seed)

        def call(self, ids, training=None):
            if not training:
                return ids
            keep = keras.random.uniform(ops.shape(ids), seed=self.gen) >= rate
            return ops.where(keep, ids, ops.zeros_like(ids))

    ids = keras.Input(shape=shape, dtype="int32")
    return keras.Model(ids, base(IdDropout()(ids)))


def teacher_probs(arr, num_classes, folds=0, seed=0):
    """The script's TF-IDF + logistic regression (word 1-2 + char_wb 2-5), fitted on the training
    texts only; its class probabilities on the training and validation texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union
    model = make_pipeline(make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                                     TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
                          LogisticRegression(C=10.0, max_iter=2000))
    model.fit(arr["train"][2], arr["train"][1])
    assert list(model.classes_) == list(range(num_classes))
    test_acc = float(np.mean(model.predict(arr["test"][2]) == arr["test"][1]))
    qt = model.predict_proba(arr["train"][2])
    if folds:  # tfold=k: training-text targets cross-fitted (each fold predicted by a teacher fitted on the others)
        from sklearn.base import clone
        from sklearn.model_selection import StratifiedKFold
        texts, labels = np.array(arr["train"][2], dtype=object), arr["train"][1]
        for fit_idx, pred_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(texts, labels):
            m = clone(model).fit(list(texts[fit_idx]), labels[fit_idx])
            qt[pred_idx] = 0
            qt[np.ix_(pred_idx, m.classes_)] = m.predict_proba(list(texts[pred_idx]))
    return qt, model.predict_proba(arr["validation"][2]), test_acc


def distill_loss(num_classes, T, alpha):
    """y_true packs [one-hot true label, teacher probabilities]; y_pred is the student's softmax.
    alpha * CE(true) + (1 - alpha) * T^2 * KL(teacher_T || student_T), temperature applied to
    log-probabilities (logits up to a constant)."""
    from keras import ops
    eps = 1e-7

    def loss(y_true, y_pred):
        onehot, q = y_true[:, :num_classes], y_true[:, num_classes:]
        logp = ops.log(ops.clip(y_pred, eps, 1.0))
        ce = -ops.sum(onehot * logp, axis=-1)
        ps = ops.softmax(logp / T, axis=-1)
        qt = ops.softmax(ops.log(ops.clip(q, eps, 1.0)) / T, axis=-1)
        kl = ops.sum(qt * (ops.log(ops.clip(qt, eps, 1.0)) - ops.log(ops.clip(ps, eps, 1.0))), axis=-1)
        return alpha * ce + (1 - alpha) * T * T * kl
    return loss


def true_ce(num_classes):
    from keras import ops

    def true_ce(y_true, y_pred):
        return -ops.sum(y_true[:, :num_classes] * ops.log(ops.clip(y_pred, 1e-7, 1.0)), axis=-1)
    return true_ce


class PooledMixup:
    """Manifold mixup (Guo, Mao & Zhang 2019) on pooled sentence vectors: built lazily as a Keras
    layer (so the module imports keras only when used). In training, features and one-hot labels
    of each text are mixed with those of a random other text of the batch, lambda ~ Beta(a, a)
    drawn per text; at inference both pass through unchanged."""

    def __new__(cls, alpha, seed):
        import keras
        from keras import ops

        class Mixup(keras.layers.Layer):
            def __init__(self, **kw):
                super().__init__(**kw)
                self.gen = keras.random.SeedGenerator(seed)

            def call(self, features, labels, training=None):
                if not training:
                    return features, labels
                n = ops.shape(features)[0]
                lam = keras.random.beta((n, 1), alpha, alpha, seed=self.gen)
                perm = keras.random.shuffle(ops.arange(n), seed=self.gen)
                mix = lambda t: lam * t + (1.0 - lam) * ops.take(t, perm, axis=0)
                return mix(features), mix(ops.cast(labels, features.dtype))

        return Mixup(name="mixup")


def build_mixup_model(shape, num_ids, num_classes, spec, alpha, seed):
    """The default factorized CNN (max + average pooling) with PooledMixup between pooling and
    dropout + softmax. Inputs: ids and one-hot labels (zeros at inference, where they are unused);
    output: [class probabilities, the (mixed) labels] concatenated, for mixup_ce."""
    import keras
    from models.layers import TokenEmbedding
    from models.votes import add_votes

    ids = keras.Input(shape=shape, dtype="int32")
    labels = keras.Input(shape=(num_classes,), dtype="float32")
    pooled = max_average_windows(TokenEmbedding(num_ids, spec.embedding_dim, name="embedding")(ids), spec)
    mixed, targets = PooledMixup(alpha, seed)(pooled, labels)
    probs = add_votes(mixed, num_classes, spec)
    return keras.Model([ids, labels], keras.layers.Concatenate()([probs, targets]))


def mixup_ce(num_classes):
    """Cross-entropy of the probabilities (first num_classes columns of y_pred) against the mixed
    labels the model passed through (the rest); y_true is unused."""
    from keras import ops

    def mixup_ce(y_true, y_pred):
        return -ops.sum(y_pred[:, num_classes:] * ops.log(ops.clip(y_pred[:, :num_classes], 1e-7, 1.0)), axis=-1)
    return mixup_ce


def check_mixup(model, x, num_classes):
    """Print evidence that the model mixes the labels it passes through in training (as fit calls
    it) and passes them through unchanged at inference, and that the layer mixes the features."""
    import keras
    from keras import ops
    layer = model.get_layer("mixup")
    labels = np.eye(num_classes, dtype="float32")[np.arange(len(x)) % num_classes]
    lt = ops.convert_to_numpy(model([x, labels], training=True))[:, num_classes:]
    li = ops.convert_to_numpy(model([x, labels], training=False))[:, num_classes:]
    f = ops.convert_to_numpy(keras.Model(model.inputs, layer.input[0])([x, labels]))
    ft, _ = layer(f, labels, training=True)
    print(f"mixup check: training: label rows sum to 1 {np.allclose(lt.sum(1), 1)}, mean top label "
          f"{lt.max(1).mean():.3f} (1.0 = unmixed), texts with a second label > 0.05: "
          f"{(np.sort(lt, 1)[:, -2] > 0.05).mean():.2f}, features changed {not np.allclose(ops.convert_to_numpy(ft), f)}; "
          f"inference: labels unchanged {np.allclose(li, labels)}", flush=True)


def logistic_head(model, arr_x, arr_y):
    """headlr: logistic regression on the trained CNN's pooled features (the input of its final
    dropout), standardized; C chosen by validation accuracy (ties: lower log loss) with the model
    fitted on the training texts, then refitted on train + validation. Returns (test accuracy, C,
    validation accuracy at C)."""
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    features = keras.Model(model.inputs, model.get_layer("dropout_out").input)
    f = {k: features.predict(arr_x[k], verbose=0, batch_size=256) for k in arr_x}
    fit = lambda C, xs, ys: make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000)).fit(xs, ys)
    scores = []
    for C in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0):
        m = fit(C, f["train"], arr_y["train"])
        scores.append((-float(np.mean(m.predict(f["validation"]) == arr_y["validation"])),
                       float(log_loss(arr_y["validation"], m.predict_proba(f["validation"]), labels=m.classes_)), C))
    scores.sort()
    print("headlr validation (-acc, log loss, C):", [(round(a, 3), round(l, 3), C) for a, l, C in scores], flush=True)
    C = scores[0][2]
    m = fit(C, np.concatenate([f["train"], f["validation"]]), np.concatenate([arr_y["train"], arr_y["validation"]]))
    return float(np.mean(m.predict(f["test"]) == arr_y["test"])), C, -scores[0][0]


def lazy_adam(learning_rate):
    """Adam that moves an embedding row, and its moments, only in steps whose batch holds that id
    (TF Addons' LazyAdam): dense Adam keeps moving a rare n-gram's row by its momentum for many
    steps after the one batch that held it."""
    import keras
    from keras import ops

    class LazyAdam(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            name = getattr(variable, "path", None) or getattr(variable, "name", "")  # TF passes its own variable
            if "embeddings" not in name:
                return super().update_step(gradient, variable, learning_rate)
            lr = ops.cast(learning_rate, variable.dtype)
            gradient = ops.cast(gradient, variable.dtype)
            step = ops.cast(self.iterations + 1, variable.dtype)
            alpha = lr * ops.sqrt(1 - ops.power(self.beta_2, step)) / (1 - ops.power(self.beta_1, step))
            m = self._momentums[self._get_variable_index(variable)]
            v = self._velocities[self._get_variable_index(variable)]
            rows = ops.cast(ops.any(ops.not_equal(gradient, 0), axis=1, keepdims=True), variable.dtype)
            self.assign_add(m, rows * (gradient - m) * (1 - self.beta_1))
            self.assign_add(v, rows * (ops.square(gradient) - v) * (1 - self.beta_2))
            self.assign_sub(variable, rows * m * alpha / (ops.sqrt(v) + self.epsilon))

    return LazyAdam(learning_rate)


def run_variant(variant, arr, num_ids, num_classes, seed):
    import keras
    import models
    from models import ModelSpec
    from pipelines.modality import MODALITIES
    o = parse(variant)
    spec_d = MODALITIES[Modality.text].model_defaults.to_dict()
    for k in list(o):
        if k in spec_d:
            v = o.pop(k)
            spec_d[k] = type(spec_d[k])(v) if not isinstance(spec_d[k], (list, type(None))) else (
                [int(x) for x in v.split(",")] if isinstance(spec_d[k], list) else v)
    spec = ModelSpec.from_dict(spec_d)
    keras.utils.set_random_seed(seed)
    (xt, yt, _), (xv, yv, _), (xs, ys, _) = arr["train"], arr["validation"], arr["test"]
    if "mindf" in o:  # hashed n-gram ids found in fewer training texts than this read as padding
        xt, xv, xs = drop_rare_ngrams((xt, xv, xs), int(o["mindf"]))
    lr = float(o.get("lr", 3e-3))
    bs = int(o.get("bs", 32))
    patience = int(o.get("patience", 5))
    epochs = int(o.get("epochs", 30))
    members = int(o.get("ens", 1))
    build = lambda: models.build_text_model(xt.shape[1], num_ids, num_classes, spec, ids_per_position=xt.shape[2] if xt.ndim == 3 else 1)
    if {"tdrop", "edrop", "mavg"} & set(o):
        build = lambda: build_variant_model(xt.shape[1:], num_ids, num_classes, spec, float(o.get("tdrop", 0)), float(o.get("edrop", 0)), int(o.get("mavg", 0)))
    if "idf" in o:
        weights = idf_weights(xt, num_ids)
        build = lambda: build_idf_model(xt.shape[1:], num_ids, num_classes, spec, weights)
    if "wide" in o:
        build = lambda: build_wide_model(xt.shape[1:], num_ids, num_classes, spec)
    if "mixup" in o:  # the model takes the labels too and returns [probs, mixed labels]
        assert members == 1, "mixup builds one member"
        build = lambda: build_mixup_model(xt.shape[1:], num_ids, num_classes, spec, float(o["mixup"]), seed)
    if members == 1:
        model = build()
    else:
        inp = keras.Input(shape=xt.shape[1:], dtype="int32")
        outs = []
        for m in range(members):
            sub = build()
            sub.name = f"member{m}"  # noqa
            outs.append(sub(inp))
        model = keras.Model(inp, keras.layers.Average()(outs))
    if "iddrop" in o:  # single input ids read as padding at this rate, training only
        model = with_id_dropout(model, xt.shape[1:], float(o["iddrop"]), seed)
    if "lsa" in o:  # ids seen in training start from their LSA vectors (lsamode=add: on top of the random init)
        seen, v = lsa_rows(xt, num_ids, spec.embedding_dim, seed, float(o["lsa"]))
        for w in model.weights:
            if "embeddings" in w.path:
                e = np.array(w.numpy())
                if o.get("lsamode") == "add":
                    e[seen] += v
                else:
                    e[seen] = v
                w.assign(e)
    if o.get("frozen") == "1":  # the embedding stays its random init: a fixed random projection of the ids
        from models.layers import TokenEmbedding
        frozen = [layer for layer in model._flatten_layers() if isinstance(layer, TokenEmbedding)]
        assert frozen, "no TokenEmbedding to freeze"
        for layer in frozen:
            layer.trainable = False
    if "maxnorm" in o:
        for v in model.weights:
            if "embeddings" in v.path:
                v.constraint = keras.constraints.MaxNorm(float(o["maxnorm"]), axis=1)
    ls = float(o.get("ls", 0))
    if ls:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=ls)
        yt_, yv_ = keras.utils.to_categorical(yt, num_classes), keras.utils.to_categorical(yv, num_classes)
    else:
        loss = "sparse_categorical_crossentropy"
        yt_, yv_ = yt, yv
    metrics = ["accuracy"]
    monitor = "val_loss"
    if "mixup" in o:
        eye = np.eye(num_classes, dtype=np.float32)
        loss, metrics = mixup_ce(num_classes), []
        xt, xv, xs = [xt, eye[yt]], [xv, eye[yv]], [xs, np.zeros((len(ys), num_classes), np.float32)]
        yt_, yv_ = eye[yt], eye[yv]
        check_mixup(model, xt[0][:64], num_classes)
    if "distill" in o:  # knowledge distillation from TF-IDF + LR fitted on the training texts only
        T, alpha = float(o["distill"]), float(o.get("alpha", 0.5))
        qt, qv, teacher_acc = teacher_probs(arr, num_classes, int(o.get("tfold", 0)), seed)
        print("teacher (train only) test acc", teacher_acc, "mean max prob train", qt.max(1).mean(), "val", qv.max(1).mean(), flush=True)
        eye = np.eye(num_classes, dtype=np.float32)
        yt_ = np.concatenate([eye[yt], qt.astype(np.float32)], 1)
        yv_ = np.concatenate([eye[yv], qv.astype(np.float32)], 1)
        loss = distill_loss(num_classes, T, alpha)
        metrics = [true_ce(num_classes)]
        monitor = "val_true_ce"  # early stopping on the validation loss against the true labels
    schedule = o.get("sched")
    callbacks = [keras.callbacks.EarlyStopping(monitor=monitor, mode="min", patience=patience, restore_best_weights=True)]
    if schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=int(o.get("pp", 2))))
    opt_lr = lr
    if schedule == "cosine":
        steps = epochs * int(np.ceil(len(xt) / bs))
        opt_lr = keras.optimizers.schedules.CosineDecay(lr, steps)
    ema = {"use_ema": True, "ema_momentum": float(o["ema"])} if "ema" in o else {}
    if ema:  # validation, early stopping and the restored weights all use the averaged weights
        callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if o.get("opt") == "lazyadam":
        optimizer = lazy_adam(opt_lr)
    elif o.get("opt") == "adagrad":
        optimizer = keras.optimizers.Adagrad(opt_lr)
    elif o.get("opt") == "sgd":
        optimizer = keras.optimizers.SGD(opt_lr, momentum=float(o.get("mom", 0.9)))
    elif "wd" in o:
        optimizer = keras.optimizers.AdamW(opt_lr, weight_decay=float(o["wd"]), **ema)
    else:
        optimizer = keras.optimizers.Adam(opt_lr, **ema)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    curve = []
    if o.get("trace") == "1":  # test accuracy after every epoch, to see what early stopping on validation picks
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: curve.append(
            float(np.mean(model.predict(xs, verbose=0, batch_size=256)[:, :num_classes].argmax(1) == ys)))))
    t = time.perf_counter()
    train_data = (xt, yt_) if "crop" not in o else (random_crops(xt, yt_, bs, float(o["crop"]), seed),)
    h = model.fit(*train_data, validation_data=(xv, yv_), epochs=epochs, batch_size=None if "crop" in o else bs, verbose=0, callbacks=callbacks)
    if o.get("refit"):  # a fresh model on train + validation for the early-stopped epoch count
        best = int(np.argmin(h.history["val_loss"])) + 1
        keras.utils.set_random_seed(seed)
        model = build()
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=["accuracy"])
        model.fit(np.concatenate([xt, xv]), np.concatenate([yt_, yv_]), epochs=best, batch_size=bs, verbose=0)
    extra = {"test_curve": curve, "val_loss_curve": [round(v, 4) for v in h.history["val_loss"]]} if curve else {}
    if o.get("zerounseen") == "1":  # rows of ids no training text holds never had a gradient: zero them
        extra["acc_before_zeroing"] = float(np.mean(model.predict(xs, verbose=0, batch_size=256)[:, :num_classes].argmax(1) == ys))
        unseen = np.setdiff1d(np.arange(num_ids), np.unique(xt))
        for w in model.weights:
            if "embeddings" in w.path:
                e = np.array(w.numpy())
                e[unseen] = 0
                w.assign(e)
        extra["unseen_rows"] = int(len(unseen))
    if o.get("headlr"):  # the softmax head replaced by logistic regression on the pooled features
        extra["cnn_acc"] = float(np.mean(model.predict(xs, verbose=0, batch_size=256).argmax(1) == ys))
        head_acc, extra["C"], extra["val_acc"] = logistic_head(model, {"train": xt, "validation": xv, "test": xs}, {"train": yt, "validation": yv, "test": ys})
    secs = time.perf_counter() - t
    if o.get("headlr"):
        acc = head_acc
    else:
        acc = float(np.mean(model.predict(xs, verbose=0, batch_size=256)[:, :num_classes].argmax(1) == ys))
    return acc, len(h.history["loss"]), secs, extra


for seed in [int(s) for s in args.seeds.split(",")]:
    arr, num_ids, num_classes, pcfg = encode(seed)
    out = open(args.out, "a")
    if not os.path.exists(f"/tmp/sweep-tfidf-{name}-{seed}-{args.test_split}"):
        acc = tfidf(arr)
        open(f"/tmp/sweep-tfidf-{name}-{seed}-{args.test_split}", "w").write(str(acc))
        out.write(json.dumps({"data": name, "seed": seed, "variant": "tfidf_lr", "acc": acc}) + "\n"); out.flush()
    if args.tfidf_parts:
        for label, kwargs in [("tfidf_lr_words", {"parts": ("word",)}), ("tfidf_lr_chars", {"parts": ("char",)}),
                              ("tfidf_lr_train_only", {"splits": ("train",)})]:
            acc = tfidf(arr, **kwargs)
            out.write(json.dumps({"data": name, "seed": seed, "variant": label, "acc": acc}) + "\n"); out.flush()
            print(name, seed, label, acc, flush=True)
    for variant in filter(None, args.variants.split(";")):
        acc, ep, secs, extra = run_variant(variant, arr, num_ids, num_classes, seed)
        out.write(json.dumps({"data": name, "seed": seed, "variant": variant, "positions": args.positions, "pre": args.pre, "acc": acc, "epochs": ep, "secs": round(secs, 1), "shape": list(arr["train"][0].shape), **extra}) + "\n"); out.flush()
        print(name, seed, variant, acc, ep, round(secs, 1), extra or "", flush=True)
