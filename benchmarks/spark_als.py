"""Spark MLlib's implicit ALS on a saved matrix, run by ``benchmarks.distributed spark``.

Usage (pyspark needs only NumPy, pandas and a Java runtime; not ``als``)::

    python benchmarks/spark_als.py IN.npz OUT.npz --factors 64 --iterations 15 \\
        --reg-param 0.01 --alpha 1 --cores 2

``IN.npz`` holds ``row``, ``col``, ``data`` (raw ratings) and ``shape``; ``OUT.npz`` gets
``user_factors``, ``item_factors`` (zero rows for ids Spark never saw) and the seconds of a
1-iteration fit and of the full fit, each timed to materialised factors after an untimed
1-iteration fit has warmed up the JVM.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--factors", type=int, required=True)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--reg-param", type=float, required=True)
    parser.add_argument("--alpha", type=float, required=True)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--memory", default="6g")
    args = parser.parse_args()

    import pandas as pd
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import SparkSession

    source = np.load(args.source)
    shape = tuple(int(n) for n in source["shape"])
    spark = (
        SparkSession.builder.master(f"local[{args.cores}]")
        .config("spark.driver.memory", args.memory)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(args.cores))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    frame = spark.createDataFrame(
        pd.DataFrame(
            {
                "user": source["row"].astype(np.int32),
                "item": source["col"].astype(np.int32),
                "rating": source["data"].astype(np.float32),
            }
        )
    ).cache()
    frame.count()

    def fit(iterations):
        als = ALS(
            rank=args.factors,
            maxIter=iterations,
            regParam=args.reg_param,
            alpha=args.alpha,
            implicitPrefs=True,
            userCol="user",
            itemCol="item",
            ratingCol="rating",
            numUserBlocks=args.cores,
            numItemBlocks=args.cores,
            seed=0,
        )
        started = time.perf_counter()
        model = als.fit(frame)
        tables = [model.userFactors.toPandas(), model.itemFactors.toPandas()]
        return tables, time.perf_counter() - started

    fit(1)  # the JVM's first fit compiles and loads classes: not timed
    _, one = fit(1)
    tables, total = fit(args.iterations)
    arrays = {}
    for name, table, rows in zip(("user_factors", "item_factors"), tables, shape, strict=True):
        array = np.zeros((rows, args.factors), dtype=np.float32)
        if len(table):
            array[table["id"].to_numpy()] = np.stack(table["features"].to_numpy())
        arrays[name] = array
    np.savez(args.target, one_iteration=one, total=total, **arrays)
    spark.stop()


if __name__ == "__main__":
    main()
