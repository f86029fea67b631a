//! `dataset::list_images`: the image files of one folder, sorted, by extension.
use gradstep_data::dataset::list_images;

#[test]
fn lists_the_images_of_a_folder_sorted_and_names_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["b.PNG", "a.jpg", "c.tiff", "notes.txt", "d.png.bak"] {
        std::fs::write(dir.path().join(name), b"").unwrap();
    }
    // A sub-folder's images are not the folder's.
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/e.png"), b"").unwrap();
    let names: Vec<String> = list_images(dir.path())
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a.jpg", "b.PNG", "c.tiff"]);

    let empty = dir.path().join("sub/empty");
    std::fs::create_dir(&empty).unwrap();
    let err = list_images(&empty).unwrap_err().to_string();
    assert!(err.contains("empty") && err.contains("no image"), "{err}");
    let err = list_images(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing") && err.contains("cannot read"),
        "{err}"
    );
}
