"""The GBDT evaluator against XGBoost and LightGBM themselves: models trained here with the
`xgboost` and `lightgbm` packages (several depths, missing values, a categorical feature, two
objectives) are scored by `riskstream model predict`, which calls the same SQL function the jobs
do, and must give their predictions to 1e-6, and XGBoost's path contributions
(`approx_contribs`) to 1e-5."""

import json
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import lightgbm as lgb
import xgboost as xgb
from conftest import S3_CREDENTIALS, run_riskstream, s3_env

FEATURES = ["amount", "velocity", "distance_km", "merchant_code", "account_age"]
CATEGORICAL = {"merchant_code"}


def make_data(seed: int, rows: int):
    """Features with missing values, a categorical code, and a label that depends on all of them."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(4.0, 1.2, rows)
    velocity = rng.poisson(2.0, rows).astype(np.float64)
    distance = rng.exponential(50.0, rows)
    merchant = rng.integers(0, 12, rows).astype(np.float64)
    age = rng.integers(0, 3000, rows).astype(np.float64)
    logit = (
        0.004 * (amount - 100)
        + 0.6 * (velocity - 2)
        + 0.01 * (distance - 50)
        + np.isin(merchant, [3, 7, 11]) * 1.5
        - 0.001 * age
        + rng.normal(0, 1, rows)
    )
    label = (logit > 0.5).astype(np.float64)
    X = np.column_stack([amount, velocity, distance, merchant, age])
    # Missing values in every numeric feature, and in the categorical one.
    for col in range(X.shape[1]):
        X[rng.random(rows) < 0.08, col] = np.nan
    return X, label


def write_input(path, X):
    columns = {}
    for i, name in enumerate(FEATURES):
        values = X[:, i]
        mask = np.isnan(values)
        if name in CATEGORICAL:
            columns[name] = pa.array(np.nan_to_num(values).astype(np.int64), mask=mask)
        else:
            columns[name] = pa.array(values, mask=mask)
    pq.write_table(pa.table(columns), path)


def train(X, y, params, rounds, categorical):
    types = ["c" if (categorical and f in CATEGORICAL) else "q" for f in FEATURES]
    dtrain = xgb.DMatrix(X, label=y, feature_names=FEATURES, feature_types=types, enable_categorical=categorical)
    booster = xgb.train(dict(params, seed=7, nthread=2), dtrain, num_boost_round=rounds)
    return booster, dtrain


def predict_with_riskstream(riskstream_bin, tmp_path, booster, X, top, model_file="model.json"):
    """Saves `booster` (XGBoost's or LightGBM's) as `model_file` and scores `X` with it."""
    model_path = tmp_path / model_file
    booster.save_model(model_path)
    write_input(tmp_path / "input.parquet", X)
    out = tmp_path / "scored.parquet"
    subprocess.run(
        [
            str(riskstream_bin), "model", "predict", "--model", str(model_path),
            "--input", str(tmp_path / "input.parquet"), "--out", str(out),
            "--top-features", str(top),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return pq.read_table(out)


CASES = [
    # (name, params, rounds, categorical)
    ("depth2-logistic", {"objective": "binary:logistic", "max_depth": 2, "eta": 0.3}, 40, False),
    ("depth6-logistic", {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1}, 100, False),
    ("depth9-logistic", {"objective": "binary:logistic", "max_depth": 9, "eta": 0.2}, 30, False),
    ("depth12-lossguide", {"objective": "binary:logistic", "max_depth": 12, "grow_policy": "lossguide", "max_leaves": 64}, 20, False),
    ("depth6-categorical", {"objective": "binary:logistic", "max_depth": 6, "max_cat_to_onehot": 1, "tree_method": "hist"}, 50, True),
    ("depth5-regression", {"objective": "reg:squarederror", "max_depth": 5, "base_score": 0.25}, 30, False),
]


@pytest.mark.parametrize("name,params,rounds,categorical", CASES, ids=[c[0] for c in CASES])
def test_gbdt_matches_xgboost(riskstream_bin, tmp_path, name, params, rounds, categorical):
    X, y = make_data(11, 6000)
    booster, _ = train(X, y, params, rounds, categorical)
    # Score other rows than the training ones, including values beyond the training range.
    X_test, _ = make_data(12, 4000)
    X_test[:50, 0] *= 100
    types = ["c" if (categorical and f in CATEGORICAL) else "q" for f in FEATURES]
    dtest = xgb.DMatrix(X_test, feature_names=FEATURES, feature_types=types, enable_categorical=categorical)
    expected = booster.predict(dtest)
    contribs = booster.predict(dtest, pred_contribs=True, approx_contribs=True)

    scored = predict_with_riskstream(riskstream_bin, tmp_path, booster, X_test, top=len(FEATURES))
    got = scored.column("gbdt").to_numpy()
    assert scored.num_rows == len(expected)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(scored.column("score").to_numpy(), expected, rtol=0, atol=1e-6)
    assert set(scored.column("model_version").to_pylist()) == {"model"}

    # Every feature that moved a row's margin is listed with XGBoost's contribution, largest
    # first; the ones left out contributed nothing.
    tops = scored.column("top_features").to_pylist()
    for row, top in enumerate(tops):
        listed = {entry["feature"]: entry["contribution"] for entry in top}
        for i, feature in enumerate(FEATURES):
            want = float(contribs[row, i])
            assert abs(listed.get(feature, 0.0) - want) < 1e-5, (row, feature, listed, want)
        sizes = [abs(entry["contribution"]) for entry in top]
        assert sizes == sorted(sizes, reverse=True)


LIGHTGBM_CASES = [
    # (name, params, rounds, categorical, missing values in training)
    ("31-leaves", {"objective": "binary", "num_leaves": 31, "learning_rate": 0.1}, 100, False, True),
    ("depth3", {"objective": "binary", "max_depth": 3, "num_leaves": 8, "learning_rate": 0.3}, 40, False, True),
    # Trained without missing values: LightGBM then reads a missing value as 0.
    ("no-missing-in-training", {"objective": "binary", "num_leaves": 15}, 40, False, False),
    ("categorical", {"objective": "binary", "num_leaves": 15, "min_data_per_group": 20, "cat_smooth": 1}, 60, True, True),
    ("sigmoid-0.5", {"objective": "binary", "sigmoid": 0.5, "num_leaves": 7}, 30, False, True),
    ("regression", {"objective": "regression", "num_leaves": 15}, 30, False, True),
]


@pytest.mark.parametrize(
    "name,params,rounds,categorical,missing", LIGHTGBM_CASES, ids=[c[0] for c in LIGHTGBM_CASES]
)
def test_gbdt_matches_lightgbm(riskstream_bin, tmp_path, name, params, rounds, categorical, missing):
    # Values that are float32 already: the evaluator reads features as float32 (as XGBoost does),
    # LightGBM compares float64.
    X, y = make_data(11, 6000)
    X = X.astype(np.float32).astype(np.float64)
    if not missing:
        X = np.nan_to_num(X, nan=1.0)
    data = lgb.Dataset(
        X, label=y, feature_name=FEATURES,
        categorical_feature=[f for f in FEATURES if categorical and f in CATEGORICAL],
    )
    booster = lgb.train(dict(params, seed=7, num_threads=2, verbose=-1), data, num_boost_round=rounds)
    X_test, _ = make_data(12, 4000)
    X_test[:50, 0] *= 100
    X_test = X_test.astype(np.float32).astype(np.float64)
    expected = booster.predict(X_test)
    margins = booster.predict(X_test, raw_score=True)

    scored = predict_with_riskstream(riskstream_bin, tmp_path, booster, X_test, len(FEATURES), "model.txt")
    assert scored.num_rows == len(expected)
    np.testing.assert_allclose(scored.column("gbdt").to_numpy(), expected, rtol=0, atol=1e-6)
    # The path contributions add up to the margin, less the same expected value on every row.
    sums = np.array([sum(e["contribution"] for e in top) for top in scored.column("top_features").to_pylist()])
    scale = params.get("sigmoid", 1.0) if params["objective"] == "binary" else 1.0
    bias = scale * margins - sums
    np.testing.assert_allclose(bias, bias[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "params,why",
    [
        ({"objective": "regression", "reg_sqrt": True}, "`sqrt`"),
        ({"objective": "binary", "boosting": "rf", "bagging_freq": 1, "bagging_fraction": 0.5}, "average_output"),
    ],
    ids=["reg_sqrt", "random-forest"],
)
def test_lightgbm_models_it_cannot_score_are_refused(riskstream_bin, tmp_path, params, why):
    X, y = make_data(3, 1000)
    booster = lgb.train(dict(params, seed=7, num_threads=2, verbose=-1), lgb.Dataset(X, label=y), num_boost_round=5)
    booster.save_model(tmp_path / "model.txt")
    write_input(tmp_path / "input.parquet", X)
    result = subprocess.run(
        [
            str(riskstream_bin), "model", "predict", "--model", str(tmp_path / "model.txt"),
            "--input", str(tmp_path / "input.parquet"), "--out", str(tmp_path / "out.parquet"),
        ],
        capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "model.txt" in result.stderr and why in result.stderr, result.stderr


def test_top_features_are_limited_and_input_columns_kept(riskstream_bin, tmp_path):
    X, y = make_data(5, 2000)
    booster, _ = train(X, y, {"objective": "binary:logistic", "max_depth": 4}, 20, False)
    scored = predict_with_riskstream(riskstream_bin, tmp_path, booster, X, top=2)
    assert scored.column_names[: len(FEATURES)] == FEATURES
    assert max(len(t) for t in scored.column("top_features").to_pylist()) == 2


def test_missing_feature_column_is_named(riskstream_bin, tmp_path):
    X, y = make_data(5, 500)
    booster, _ = train(X, y, {"objective": "binary:logistic", "max_depth": 3}, 5, False)
    booster.save_model(tmp_path / "model.json")
    pq.write_table(pa.table({"amount": X[:, 0]}), tmp_path / "input.parquet")
    result = subprocess.run(
        [
            str(riskstream_bin), "model", "predict", "--model", str(tmp_path / "model.json"),
            "--input", str(tmp_path / "input.parquet"), "--out", str(tmp_path / "out.parquet"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "velocity" in result.stderr and "distance_km" in result.stderr, result.stderr


def write_training_set(path, X, y):
    """Features, a label, and an event time in row order (so the last rows validate)."""
    columns = {name: pa.array(X[:, i], mask=np.isnan(X[:, i])) for i, name in enumerate(FEATURES)}
    columns["label"] = pa.array(y.astype(np.int64))
    columns["event_time"] = pa.array(np.arange(len(y), dtype=np.int64) * 1000, type=pa.timestamp("ms"))
    # Shuffled on disk: the trainer must sort by time itself.
    order = np.random.default_rng(0).permutation(len(y))
    pq.write_table(pa.table(columns).take(order), path)


def test_trained_model_is_xgboost_compatible_and_as_good(riskstream_bin, tmp_path):
    X, y = make_data(21, 20000)
    write_training_set(tmp_path / "train.parquet", X, y)
    out = tmp_path / "model"
    subprocess.run(
        [
            str(riskstream_bin), "train", "--input", str(tmp_path / "train.parquet"), "--label", "label",
            "--time-column", "event_time", "--out", str(out), "--name", "tx", "--version", "3",
            "--rounds", "60", "--max-depth", "5", "--eta", "0.2",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["features"] == FEATURES, "every numeric column but the label and the time"
    assert manifest["training"]["train_rows"] == 16000 and manifest["training"]["validation_rows"] == 4000
    ours = manifest["metrics"]["validation"]["gbdt"]

    # XGBoost reads our GBDT and predicts what we predict.
    X_test, y_test = make_data(22, 3000)
    booster = xgb.Booster(model_file=str(out / "gbdt.json"))
    expected = booster.predict(xgb.DMatrix(X_test, feature_names=FEATURES))
    write_input(tmp_path / "test.parquet", X_test)
    run_predict = lambda model, dest: subprocess.run(
        [str(riskstream_bin), "model", "predict", "--model", str(model), "--input", str(tmp_path / "test.parquet"), "--out", str(dest)],
        check=True, capture_output=True, text=True,
    )
    run_predict(out / "gbdt.json", tmp_path / "gbdt_only.parquet")
    got = pq.read_table(tmp_path / "gbdt_only.parquet").column("gbdt").to_numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)

    # The folder scores with the blend, 0.7 GBDT + 0.3 isolation forest in log-odds, under its
    # version.
    run_predict(out, tmp_path / "blend.parquet")
    blend = pq.read_table(tmp_path / "blend.parquet")
    g, a = blend.column("gbdt").to_numpy(), blend.column("anomaly").to_numpy()
    logit = lambda p: np.log(p / (1 - p))
    expected_blend = 1 / (1 + np.exp(-(0.7 * logit(g) + 0.3 * logit(a))))
    np.testing.assert_allclose(blend.column("score").to_numpy(), expected_blend, atol=1e-12)
    np.testing.assert_allclose(g, expected, atol=1e-6)
    assert set(blend.column("model_version").to_pylist()) == {"tx/3"}

    # As good as XGBoost with the same settings on the same split (its training rows are the
    # first 16,000 by time, as ours were).
    reference, _ = train(X[:16000], y[:16000], {"objective": "binary:logistic", "max_depth": 5, "eta": 0.2}, 60, False)
    from_xgb = reference.predict(xgb.DMatrix(X[16000:], feature_names=FEATURES))
    pos, neg = from_xgb[y[16000:] == 1], from_xgb[y[16000:] == 0]
    xgb_auc = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert ours["roc_auc"] > xgb_auc - 0.01, (ours, xgb_auc)
    assert ours["rows"] == 4000 and 0 < ours["recall_at_fpr"] <= 1


def test_train_names_bad_columns(riskstream_bin, tmp_path):
    X, y = make_data(3, 500)
    write_training_set(tmp_path / "train.parquet", X, y)
    base = [str(riskstream_bin), "train", "--input", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "m")]
    missing = subprocess.run(base + ["--label", "is_fraud"], capture_output=True, text=True)
    assert missing.returncode != 0 and "is_fraud" in missing.stderr, missing.stderr
    bad_feature = subprocess.run(base + ["--features", "amount,nope"], capture_output=True, text=True)
    assert bad_feature.returncode != 0 and "nope" in bad_feature.stderr, bad_feature.stderr
    assert not (tmp_path / "m" / "model.json").exists()


def test_registry_on_s3_publish_promote_list(riskstream_bin, tmp_path, s3_endpoint, s3_bucket):
    """train -> publish -> promote -> list against an S3 API server, and the files an outside
    S3 client sees are the model folder's."""
    import boto3

    X, y = make_data(31, 3000)
    write_training_set(tmp_path / "train.parquet", X, y)
    env = s3_env(s3_endpoint)
    lake = f"s3://{s3_bucket}/lake"
    for version in ["1", "2"]:
        run_riskstream(
            riskstream_bin, "train", "--input", str(tmp_path / "train.parquet"), "--time-column", "event_time",
            "--out", str(tmp_path / f"m{version}"), "--name", "tx", "--version", version, "--rounds", "10",
            "--seed", version,
        )
        run_riskstream(riskstream_bin, "model", "publish", "--lake", lake, "--model", str(tmp_path / f"m{version}"), env=env)
    again = run_riskstream(riskstream_bin, "model", "publish", "--lake", lake, "--model", str(tmp_path / "m1"), env=env, check=False)
    assert again.returncode != 0 and "already published" in again.stderr, again.stderr
    early = run_riskstream(riskstream_bin, "model", "promote", "--lake", lake, "tx", "9", env=env, check=False)
    assert early.returncode != 0 and "unpublished" in early.stderr, early.stderr

    run_riskstream(riskstream_bin, "model", "promote", "--lake", lake, "tx", "1", env=env)
    run_riskstream(riskstream_bin, "model", "promote", "--lake", lake, "tx", "2", "--challenger", env=env)
    listing = run_riskstream(riskstream_bin, "model", "list", "--lake", lake, env=env).stdout.splitlines()
    rows = [line.split("\t") for line in listing]
    assert [(r[0], r[1], r[2]) for r in rows] == [("tx", "1", "champion"), ("tx", "2", "challenger")]
    assert all(r[3].startswith("roc_auc=") for r in rows)

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name=S3_CREDENTIALS["AWS_REGION"])
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="lake/models/tx/1/")["Contents"])
    assert keys == [f"lake/models/tx/1/{f}" for f in ["gbdt.json", "isolation_forest.json", "model.json"]]
    champion = json.loads(s3.get_object(Bucket=s3_bucket, Key="lake/models/tx/champion.json")["Body"].read())
    assert champion["version"] == "1"
