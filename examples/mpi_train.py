"""Data-parallel training of a Fashion-MNIST classifier over MPI.

    pip install "fastmlp[mpi]"
    mpiexec -n 4 python examples/mpi_train.py

Runs from a fresh clone on a machine with internet: rank 0 downloads
Fashion-MNIST (verified, ~30 MB) into --data, default $FASTMLP_DATA/fashion-mnist,
else the user cache (~/.cache/fastmlp/fashion-mnist), once; a folder that
already holds the four files is used as it is (--data ../shared/data/fashion-mnist).
Without internet, set FASTMLP_DATA_MIRROR to a base URL serving <name>/<file>.

Every rank loads the training set and keeps its shard (1/R of the samples);
each epoch every rank trains on its shard in batches of --batch-size rows,
the gradients of each batch are averaged over the ranks with one allreduce,
and all ranks take the same step: the global batch is R x --batch-size.
Rank 0 prints the loss per epoch, the test accuracy and the samples/s.
Set OMP_NUM_THREADS to the cores per rank (e.g. 1 when there is one rank a core).
"""

from __future__ import annotations

import argparse
import sys
import time

from mpi4py import MPI

import fastmlp
from fastmlp.datasets import data_home, load_mnist
from fastmlp.distributed import shard


def fetch_data(folder: str, comm: MPI.Comm) -> None:
    """Rank 0 makes sure the files are in `folder` (downloading what is missing); if it cannot,
    every rank exits with the reason and what to do."""
    error = None
    if comm.Get_rank() == 0:
        try:
            for split in ("train", "test"):
                load_mnist("fashion-mnist", split, path=folder, download=True, dtype="uint8", normalize=False)
        except OSError as exc:
            error = (
                f"Fashion-MNIST is not in {folder} and could not be downloaded:\n{exc}\n"
                "Put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
                "t10k-labels-idx1-ubyte.gz there, or pass --data FOLDER (a folder holding them), or set "
                "FASTMLP_DATA to a folder holding fashion-mnist/, or FASTMLP_DATA_MIRROR to a base URL "
                "serving fashion-mnist/<file>."
            )
            print(error, file=sys.stderr)
    if comm.bcast(error, root=0) is not None:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        default=str(data_home() / "fashion-mnist"),
        help="folder with the Fashion-MNIST IDX files, downloaded there if missing (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="rows per rank per step")
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    fetch_data(args.data, comm)
    X, y = load_mnist("fashion-mnist", "train", path=args.data)
    X_mine, y_mine = shard(X, y, comm)  # rows [rank*m, (rank+1)*m), m = 60000 // size

    net = fastmlp.Network([784, 256, 128, 10], activation="relu", output_activation="softmax", dtype="float32", seed=0)
    opt = fastmlp.SGD(lr=args.lr, momentum=0.9, nesterov=True)
    if rank == 0:
        print(
            f"{size} {'rank' if size == 1 else 'ranks'} x {len(X_mine)} samples, batch {args.batch_size} per rank "
            f"({size * args.batch_size} global), {fastmlp.get_num_threads()} thread(s) per rank"
        )
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
        print(f"test accuracy {accuracy:.4f}; {rate:,.0f} samples/s over {size} {'rank' if size == 1 else 'ranks'}")


if __name__ == "__main__":
    main()
