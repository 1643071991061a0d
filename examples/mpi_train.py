"""Data-parallel training of a Fashion-MNIST classifier over MPI.

    pip install "fastmlp[mpi]"
    mpiexec -n 4 python examples/mpi_train.py --data ../shared/data/fashion-mnist

Every rank loads the training set and keeps its shard (1/R of the samples);
each epoch every rank trains on its shard in batches of --batch-size rows,
the gradients of each batch are averaged over the ranks with one allreduce,
and all ranks take the same step: the global batch is R x --batch-size.
Rank 0 prints the loss per epoch, the test accuracy and the samples/s.
Set OMP_NUM_THREADS to the cores per rank (e.g. 1 when there is one rank a core).
"""
from __future__ import annotations

import argparse
import os
import time

from mpi4py import MPI

import fastmlp
from fastmlp.datasets import load_mnist
from fastmlp.distributed import shard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(os.environ.get("FASTMLP_DATA", "../shared/data"),
                                                       "fashion-mnist"),
                        help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="rows per rank per step")
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    X, y = load_mnist("fashion-mnist", "train", path=args.data)
    X_mine, y_mine = shard(X, y, comm)  # rows [rank*m, (rank+1)*m), m = 60000 // size

    net = fastmlp.Network([784, 256, 128, 10], activation="relu", output_activation="softmax",
                          dtype="float32", seed=0)
    opt = fastmlp.SGD(lr=args.lr, momentum=0.9, nesterov=True)
    if rank == 0:
        print(f"{size} ranks x {len(X_mine)} samples, batch {args.batch_size} per rank "
              f"({size * args.batch_size} global), {fastmlp.get_num_threads()} thread(s) per rank")
    seconds = 0.0
    for epoch in range(args.epochs):
        comm.Barrier()
        t0 = time.perf_counter()
        loss = net.train_epoch(X_mine, y_mine, "log_loss", opt, args.batch_size, comm=comm)
        seconds += time.perf_counter() - t0
        if rank == 0:
            print(f"epoch {epoch + 1}: loss {loss:.4f}")

    if rank == 0:  # every rank holds the same parameters; one of them evaluates
        X_test, y_test = load_mnist("fashion-mnist", "test", path=args.data)
        accuracy = (net.forward(X_test).argmax(1) == y_test).mean()
        rate = args.epochs * size * len(X_mine) / seconds
        print(f"test accuracy {accuracy:.4f}; {rate:,.0f} samples/s over {size} ranks")


if __name__ == "__main__":
    main()
